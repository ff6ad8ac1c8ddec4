# Deadlock detection over three locks, with priorities: the walk that
# finds the cycle boosts owners on its way round; reporting the deadlock
# undoes every such boost.
#
#   T0 (10) holds L0, waits for L1; T1 (20) holds L1, waits for L2;
#   T2 (90) holds L2 and asks for L0: a cycle.

C: schedfifo:      0: 10
C: schedfifo:      1: 20
C: schedfifo:      2: 90
W: nprioeq:        2: 90

C: lock:           0: 0
W: locked:         0: 0
C: lock:           1: 1
W: locked:         1: 1
C: lock:           2: 2
W: locked:         2: 2

C: lock:           0: 1
W: blocked:        0: 1
W: prioeq:         1: 20
C: lock:           1: 2
W: blocked:        1: 2
W: prioeq:         2: 90

C: lock:           2: 0
W: opcodeeq:       2: -35
T: unlocked:       2: 0
# No boost of the walk is left: T0 and T1 run at what their waits give.
T: prioeq:         0: 10
T: prioeq:         1: 20
T: prioeq:         2: 90

C: unlock:         2: 2
W: locked:         1: 2
C: unlock:         1: 2
C: unlock:         1: 1
W: locked:         0: 1
C: unlock:         0: 1
C: unlock:         0: 0
W: unlocked:       0: 0
W: unlocked:       0: 1
W: unlocked:       1: 1
