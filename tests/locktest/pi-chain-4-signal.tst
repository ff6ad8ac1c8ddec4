# A PI chain over four locks, boosted from its far end and deboosted step
# by step as the waiters are signalled away (each interruptible wait ends
# with -EINTR and the owners it boosted drop back to what is left).
#
#   T4 (90) -> L3 (T3, 30) -> L2 (T2, 20) -> L1 (T1, 10) -> L0 (T0, other)

C: schedfifo:      1: 10
C: schedfifo:      2: 20
C: schedfifo:      3: 30
C: schedfifo:      4: 90
W: nprioeq:        4: 90

C: lock:           0: 0
W: locked:         0: 0
C: lock:           1: 1
W: locked:         1: 1
C: lock:           2: 2
W: locked:         2: 2
C: lock:           3: 3
W: locked:         3: 3

# Build the chain from its owner end.
C: lockint:        1: 0
W: blocked:        1: 0
W: prioeq:         0: 10
C: lockint:        2: 1
W: blocked:        2: 1
W: prioeq:         0: 20
T: prioeq:         1: 20
C: lockint:        3: 2
W: blocked:        3: 2
W: prioeq:         0: 30

# The far end: every owner down the chain runs at 90.
C: lockint:        4: 3
W: blocked:        4: 3
W: prioeq:         3: 90
W: prioeq:         2: 90
W: prioeq:         1: 90
W: prioeq:         0: 90
T: nprioeq:        0: -21

# Signal the waiters away, far end first: one step down each time.
C: signal:         4: 0
W: opcodeeq:       4: -4
T: unlocked:       4: 3
W: prioeq:         0: 30
T: prioeq:         1: 30
T: prioeq:         2: 30
T: prioeq:         3: 30

C: signal:         3: 0
W: opcodeeq:       3: -4
T: unlocked:       3: 2
T: locked:         3: 3
W: prioeq:         0: 20
T: prioeq:         3: 30
T: prioeq:         2: 20

C: signal:         2: 0
W: opcodeeq:       2: -4
W: prioeq:         0: 10
T: prioeq:         1: 10

C: signal:         1: 0
W: opcodeeq:       1: -4
W: prioeq:         0: -21
T: prioeq:         1: 10

C: unlock:         0: 0
C: unlock:         1: 1
C: unlock:         2: 2
C: unlock:         3: 3
W: unlocked:       3: 3
W: unlocked:       0: 0
