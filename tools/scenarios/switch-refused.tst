# A switch of the lock dimension needs every switchable lock released: a
# tester thread that holds locks while idle keeps it from quiescence, so the
# switch is refused, and the reason names the locks. Released, it goes.
C: switch:        0:      rt
T: switchok:      0:      0

C: locknowait:    2:      0
W: locked:        2:      0
C: locknowait:    2:      1
W: locked:        2:      1

C: switch:        0:      mainline
T: switchrefused: 0:      0
T: switchrefused: 0:      1

C: unlock:        2:      1
W: unlocked:      2:      1
C: unlock:        2:      0
W: unlocked:      2:      0

C: switch:        0:      mainline
T: switchok:      0:      0
