# Priority inheritance along a chain: T2 (FIFO 90) waits for T1 (FIFO 80),
# which waits for T0 (SCHED_OTHER); both owners run at 90 until they unlock.
# Under mainline with fewer than 3 vCPUs, T2 shares T0's CPU, which T0 keeps
# with preemption off while it holds L0: not applicable from T2's lock on.
C: resetevent:    0:      0
W: opcodeeq:      0:      0
C: schedother:    0:      0
C: schedfifo:     1:      80
C: schedfifo:     2:      90

# T0 holds L0
C: locknowait:    0:      0
W: locked:        0:      0

# T1 holds L1, then waits for L0: T0 runs at 80
C: locknowait:    1:      1
W: locked:        1:      1
C: locknowait:    1:      0
W: blocked:       1:      0
W: prioeq:        0:      80

# T2 waits for L1: T1, and through it T0, run at 90
C: locknowait:    2:      1
W: blocked:       2:      1
W: prioeq:        1:      90
W: prioeq:        0:      90
T: nprioeq:       0:      -21
T: nprioeq:       1:      80

# T0 unlocks L0: T1 takes it and still runs at 90 (T2 waits for its L1)
C: unlock:        0:      0
W: locked:        1:      0
W: prioeq:        0:      -21
T: prioeq:        1:      90

# T1 unlocks L1: T2 takes it, T1 is back at 80
C: unlock:        1:      1
W: locked:        2:      1
W: prioeq:        1:      80

C: unlock:        1:      0
W: unlocked:      1:      0
C: unlock:        2:      1
W: unlocked:      2:      1
