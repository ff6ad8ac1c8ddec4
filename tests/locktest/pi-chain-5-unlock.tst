# A PI chain over five locks deboosted by unlocks from its owner end: each
# unlock hands the lock to the waiter, whose own inheritance continues; an
# owner that has released everything runs at its normal priority again.
#
#   T5 (60) -> L4 (T4, other) -> L3 (T3, other) -> L2 (T2, other)
#           -> L1 (T1, other) -> L0 (T0, other)

C: schedfifo:      5: 60
W: nprioeq:        5: 60

C: lock:           0: 0
W: locked:         0: 0
C: lock:           1: 1
W: locked:         1: 1
C: lock:           2: 2
W: locked:         2: 2
C: lock:           3: 3
W: locked:         3: 3
C: lock:           4: 4
W: locked:         4: 4

C: lock:           1: 0
W: blocked:        1: 0
C: lock:           2: 1
W: blocked:        2: 1
C: lock:           3: 2
W: blocked:        3: 2
C: lock:           4: 3
W: blocked:        4: 3
T: prioeq:         0: -21

C: lock:           5: 4
W: blocked:        5: 4
W: prioeq:         0: 60
T: prioeq:         1: 60
T: prioeq:         2: 60
T: prioeq:         3: 60
T: prioeq:         4: 60

# T0 lets L0 go: T1 takes it and stays boosted (it still owns L1, whose
# waiter T2 is boosted by the rest of the chain).
C: unlock:         0: 0
W: locked:         1: 0
W: prioeq:         0: -21
T: prioeq:         1: 60

C: unlock:         1: 0
C: unlock:         1: 1
W: locked:         2: 1
W: prioeq:         1: -21
T: prioeq:         2: 60

C: unlock:         2: 1
C: unlock:         2: 2
W: locked:         3: 2
W: prioeq:         2: -21

C: unlock:         3: 2
C: unlock:         3: 3
W: locked:         4: 3
W: prioeq:         3: -21
T: prioeq:         4: 60

C: unlock:         4: 3
C: unlock:         4: 4
W: locked:         5: 4
W: prioeq:         4: -21
C: unlock:         5: 4
W: unlocked:       5: 4
