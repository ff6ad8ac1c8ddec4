# Waiters of equal priority take the lock in the order they queued (FIFO
# among equals), each one as the lock is handed on.
#
# T0 (SCHED_OTHER) holds L0; T1, T3, T5 (all FIFO 80, on CPU 1) queue in
# that order; each unlock hands L0 to the next in line.

C: resetevent:     0: 0
W: opcodeeq:       0: 0

C: schedfifo:      1: 80
C: schedfifo:      3: 80
C: schedfifo:      5: 80
W: nprioeq:        5: 80

C: lock:           0: 0
W: locked:         0: 0

C: lock:           1: 0
W: blocked:        1: 0
C: lock:           3: 0
W: blocked:        3: 0
C: lock:           5: 0
W: blocked:        5: 0

# First come, first served.
C: unlock:         0: 0
W: locked:         1: 0
T: blocked:        3: 0
T: blocked:        5: 0

C: unlock:         1: 0
W: locked:         3: 0
T: blocked:        5: 0
T: unlocked:       1: 0

C: unlock:         3: 0
W: locked:         5: 0
C: unlock:         5: 0
W: unlocked:       5: 0
T: opcodeeq:       5: 0
