# Deadlock detection over two locks: the lock call that would close the
# cycle returns -EDEADLK (-35) and does not block; the other thread's wait
# goes on and ends when the lock is released. Relocking a held lock is a
# deadlock of one.

C: schedfifo:      0: 80
C: schedfifo:      1: 80
W: nprioeq:        1: 80

C: lock:           0: 0
W: locked:         0: 0
C: lock:           1: 1
W: locked:         1: 1

C: lockint:        0: 1
W: blocked:        0: 1

# T1 -> L0 (T0) -> L1 (T1): a cycle.
C: lockint:        1: 0
W: opcodeeq:       1: -35
T: unlocked:       1: 0
T: blocked:        0: 1
T: locked:         1: 1

# Relocking a lock one holds.
C: lock:           1: 1
W: opcodeeq:       1: -35
T: locked:         1: 1

C: unlock:         1: 1
W: locked:         0: 1
C: unlock:         0: 1
C: unlock:         0: 0
W: unlocked:       0: 0
W: unlocked:       0: 1
