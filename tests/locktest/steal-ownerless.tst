# While an unlocked lock waits for its woken top waiter to take it, a
# newcomer that outranks that waiter takes it first (a steal); a newcomer
# that does not outrank it queues behind it.
#
# T1 (FIFO 70, CPU 1) is held for 2 s between its wake-up and taking
# the lock (wakedelay): the window in which the lock has no owner. The
# newcomers T2 (80) and T4 (60) run on CPU 0.

C: schedfifo:      1: 70
C: schedfifo:      2: 80
C: schedfifo:      4: 60
W: nprioeq:        4: 60
C: wakedelay:      1: 2000
W: opcodeeq:       1: 0

C: lock:           0: 0
W: locked:         0: 0
C: lock:           1: 0
W: blocked:        1: 0

# L0 is left ownerless; T1 is woken and held in the window.
C: unlock:         0: 0
W: unlocked:       0: 0

# T2 outranks the top waiter: it takes the lock; T1 goes back to waiting.
C: lock:           2: 0
W: locked:         2: 0
T: blocked:        1: 0

# The hand-off to T1 opens the window again: T4 (60) must not overtake.
C: unlock:         2: 0
W: unlocked:       2: 0
C: lock:           4: 0
W: blocked:        4: 0
W: locked:         1: 0
T: blocked:        4: 0

C: wakedelay:      1: 0
C: unlock:         1: 0
W: locked:         4: 0
C: unlock:         4: 0
W: unlocked:       4: 0
