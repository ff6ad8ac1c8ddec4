# Priority inheritance over one lock: a SCHED_OTHER holder runs at the
# FIFO priority of the thread it blocks, and drops back when it unlocks.
#
# X: opcode:      thread: argument
C: resetevent:    0:      0
W: opcodeeq:      0:      0

C: schedother:    0:      0
C: schedfifo:     1:      80

# T0 takes L0
C: locknowait:    0:      0
W: locked:        0:      0

# T1 (FIFO 80) blocks on L0: T0 is boosted to 80, its own priority unchanged
C: locknowait:    1:      0
W: blocked:       1:      0
T: prioeq:        0:      80
T: nprioeq:       0:      -21

# T0 unlocks: T1 takes L0, T0 is back at SCHED_OTHER
C: unlock:        0:      0
W: unlocked:      0:      0
W: locked:        1:      0
T: prioeq:        0:      -21

C: unlock:        1:      0
W: unlocked:      1:      0
