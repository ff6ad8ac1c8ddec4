# A runtime switch with every tester thread idle succeeds, and the locks
# work in the new mode as in the old: mutual exclusion and the hand-off.
# (From the rt profile: to mainline and back.)

C: switch:         0: mainline
T: switchok:       0: 0

C: lock:           0: 0
W: locked:         0: 0
C: lock:           1: 0
W: blocked:        1: 0
C: unlock:         0: 0
W: locked:         1: 0
C: unlock:         1: 0
W: unlocked:       1: 0

C: switch:         0: rt
T: switchok:       0: 0

C: schedfifo:      1: 80
W: nprioeq:        1: 80
C: lock:           0: 0
W: locked:         0: 0
C: lock:           1: 0
W: blocked:        1: 0
C: unlock:         0: 0
W: locked:         1: 0
C: unlock:         1: 0
W: unlocked:       1: 0
