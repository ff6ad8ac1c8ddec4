# An owner's own priority changes while it holds a boosted lock: its
# effective priority is the higher of its new normal priority and what it
# inherits (the change goes through the PI lock, as sched_setscheduler()
# on a lock owner does in Linux).

C: schedfifo:      1: 50
W: nprioeq:        1: 50

C: lock:           0: 0
W: locked:         0: 0
C: lock:           1: 0
W: blocked:        1: 0
W: prioeq:         0: 50

# Above its waiter: its own priority rules.
C: schedfifo:      0: 70
W: prioeq:         0: 70
T: nprioeq:        0: 70

# Below its waiter: the inherited priority rules.
C: schedfifo:      0: 20
W: prioeq:         0: 50
T: nprioeq:        0: 20

# Back to SCHED_OTHER: still boosted to 50.
C: schedother:     0: 0
W: nprioeq:        0: -21
T: prioeq:         0: 50

C: unlock:         0: 0
W: locked:         1: 0
W: prioeq:         0: -21
C: unlock:         1: 0
W: unlocked:       1: 0
