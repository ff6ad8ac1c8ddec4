# Two threads take two locks in opposite order (ABBA). The rt lock sees the
# cycle at the second blocking call and refuses it with -EDEADLK (-35):
# that thread does not block (Linux's tester let both block, then signalled
# them out). Not applicable under mainline: a spinlock has no detection.
C: resetevent:    0:      0
W: opcodeeq:      0:      0
C: schedfifo:     0:      80
C: schedfifo:     1:      80

C: locknowait:    0:      0
W: locked:        0:      0
C: locknowait:    1:      1
W: locked:        1:      1

# T0 waits for L1, held by T1
C: lockintnowait: 0:      1
W: blocked:       0:      1

# T1 asks for L0, held by T0, which waits for T1: refused, T1 keeps L1
C: lockintnowait: 1:      0
W: opcodeeq:      1:      -35
T: unlocked:      1:      0
T: locked:        1:      1
T: blocked:       0:      1

# T1 gives L1 up: T0 takes it
C: unlock:        1:      1
W: locked:        0:      1
C: unlock:        0:      1
W: unlocked:      0:      1
C: unlock:        0:      0
W: unlocked:      0:      0
