# A switch requested while a PI chain is boosted cannot reach a safe point
# (the owners sleep holding their locks) and is refused, naming a lock
# held; nothing changes, and the chain goes on as before once the freeze
# is over (its waiters left their waits for the freeze and queued again).

C: schedfifo:      1: 80
C: schedfifo:      3: 60
W: nprioeq:        3: 60

C: lock:           0: 0
W: locked:         0: 0
C: lock:           2: 1
W: locked:         2: 1
C: lock:           2: 0
W: blocked:        2: 0
C: lock:           1: 1
W: blocked:        1: 1
W: prioeq:         0: 80

C: switch:         0: mainline
T: switchrefused:  0: 0

W: prioeq:         2: 80
W: prioeq:         0: 80
W: blocked:        1: 1
W: blocked:        2: 0

C: unlock:         0: 0
W: locked:         2: 0
W: prioeq:         0: -21
C: unlock:         2: 1
W: locked:         1: 1
C: unlock:         2: 0
C: unlock:         1: 1
W: unlocked:       1: 1
W: unlocked:       2: 0

# Idle again: the switch goes through.
C: switch:         0: mainline
T: switchok:       0: 0
C: switch:         0: rt
T: switchok:       0: 0
