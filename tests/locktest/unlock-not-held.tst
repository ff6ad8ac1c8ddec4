# Unlocking a lock the thread does not hold is refused with -EINVAL (-22),
# whether the lock is free or another thread's; the holder keeps it.
C: unlock:        0:      3
W: opcodeeq:      0:      -22

C: locknowait:    1:      3
W: locked:        1:      3
C: unlock:        2:      3
W: opcodeeq:      2:      -22
T: locked:        1:      3

C: unlock:        1:      3
W: unlocked:      1:      3
