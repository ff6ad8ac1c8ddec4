# Priority inheritance over one lock: the owner runs at its top waiter's
# priority, follows a higher waiter up, and drops back to its own when it
# unlocks; the lock goes to the highest waiter first.

C: schedfifo:      1: 80
C: schedfifo:      2: 85
W: nprioeq:        2: 85

C: lock:           0: 0
W: locked:         0: 0
T: prioeq:         0: -21

# T1 (80) waits: T0 runs at 80, its normal priority unchanged.
C: lock:           1: 0
W: blocked:        1: 0
W: prioeq:         0: 80
T: nprioeq:        0: -21

# T2 (85) waits too: T0 follows it up.
C: lock:           2: 0
W: blocked:        2: 0
W: prioeq:         0: 85

# The unlock hands L0 to the highest waiter, and T0 drops back.
C: unlock:         0: 0
W: locked:         2: 0
W: prioeq:         0: -21
T: blocked:        1: 0

# T2 now owns L0 with T1 (80) waiting: no boost, T2 is above it.
T: prioeq:         2: 85

C: unlock:         2: 0
W: locked:         1: 0
C: unlock:         1: 0
W: unlocked:       1: 0
