# The deadlock found in review: a lock with no owner, whose woken top
# waiter has yet to take it, gets a new top waiter through a boost. The
# new top waiter must be woken, or nobody takes the lock: the old top
# waiter finds it is no longer on top and sleeps again (a lost wake-up).
#
# T1 (FIFO 70, CPU 1) is held for 2 s after its wake-up (wakedelay), so
# the boost lands while L0 has no owner. T2 (FIFO 50, CPU 0) waits for L0
# behind T1 and owns L1; T4 (FIFO 90, CPU 0) blocks on L1 and boosts T2
# above T1.

C: schedfifo:      1: 70
C: schedfifo:      2: 50
C: schedfifo:      4: 90
W: nprioeq:        4: 90
C: wakedelay:      1: 2000
W: opcodeeq:       1: 0

C: lock:           0: 0
W: locked:         0: 0
C: lock:           2: 1
W: locked:         2: 1
C: lock:           1: 0
W: blocked:        1: 0
C: lock:           2: 0
W: blocked:        2: 0

# L0 goes ownerless; T1 is woken, and held.
C: unlock:         0: 0
W: unlocked:       0: 0

# T4 boosts T2 (through L1) above T1, at the top of ownerless L0: T2 must
# be woken to take it, within T1's window.
C: lock:           4: 1
W: blocked:        4: 1
W: prioeq:         2: 90
W: locked:         2: 0
T: blocked:        1: 0

# Unwind: T1 gets L0 after T2, T4 gets L1.
C: unlock:         2: 0
W: locked:         1: 0
C: unlock:         2: 1
W: locked:         4: 1
W: prioeq:         2: 50
C: wakedelay:      1: 0
C: unlock:         1: 0
C: unlock:         4: 1
W: unlocked:       4: 1
W: unlocked:       1: 0
