#!/usr/bin/env python3
"""Drives an rtswitch control socket with a stock QMP client library.

    drive.py async SOCKET     qemu.qmp's QMPClient (asyncio)
    drive.py legacy SOCKET    qemu.qmp's QEMUMonitorProtocol (the synchronous
                              class qmp-shell and QEMU's iotests use; it sends
                              commands without ids)

Negotiates, runs every query, toggles the mode rt -> mainline -> rt (each
switch answered, and announced by a MODE_SWITCHED event), reads the switch
history (paged too) and the latency epochs, checks an error reply, then
quits and waits for the SHUTDOWN event. Prints one JSON line with what it
saw; any check that fails raises (exit status 1, traceback on stderr).
Run by tests/tests/qmp_interop.rs; every wait is bounded.
"""

import asyncio
import json
import sys

from qemu.qmp import ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

QUERIES = ["query-version", "query-commands", "query-status", "query-mode",
           "query-switches", "query-latency"]
TOGGLES = ["rt", "mainline", "rt"]
WAIT = 60.0


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_switch(reply, mode, seq):
    check(reply["mode"] == mode and reply["changed"] is True, f"set-mode {mode}: {reply}")
    check(reply["seq"] == seq and reply["ok"] is True, f"set-mode {mode}: {reply}")


def check_history(switches, latency, paged):
    check([r["to"] for r in switches["switches"]] == TOGGLES, f"query-switches: {switches}")
    check(switches["totals"]["recorded"] == 3 and switches["totals"]["completed"] == 3, f"totals: {switches}")
    check(switches["omitted"] == {"before": 0, "after": 0, "unavailable": 0}, f"omitted: {switches}")
    check([r["seq"] for r in paged["switches"]] == [2], f"paged: {paged}")
    check(paged["omitted"]["before"] == 1 and paged["omitted"]["after"] == 1, f"paged: {paged}")
    labels = [e["label"] for e in latency["epochs"]]
    # Back-to-back switches: a request that comes while the previous
    # switch's guard waits opens its switching epoch at once, so rt may
    # show only as the epoch switching away from it ("sw:rt").
    check(("rt" in labels or "sw:rt" in labels) and "mainline" in labels, f"query-latency epochs: {labels}")
    if "rt" in labels:
        check(any(m["mode"] == "rt" for m in latency["modes"]), f"query-latency modes: {latency['modes']}")


async def run_async(sock):
    qmp = QMPClient("rtswitch-interop")
    await asyncio.wait_for(qmp.connect(sock), WAIT)
    check(qmp.greeting.QMP.version is not None, f"greeting: {qmp.greeting}")
    for cmd in QUERIES:
        await asyncio.wait_for(qmp.execute(cmd), WAIT)
    events = []
    with qmp.listener(("MODE_SWITCHED",)) as listener:
        for seq, mode in enumerate(TOGGLES, 1):
            reply = await asyncio.wait_for(qmp.execute("set-mode", {"mode": mode}), WAIT)
            check_switch(reply, mode, seq)
            event = await asyncio.wait_for(listener.get(), WAIT)
            check(event["data"]["to"] == mode and event["data"]["seq"] == seq, f"event: {event}")
            check("seconds" in event["timestamp"], f"event timestamp: {event}")
            events.append(event["event"])
    switches = await asyncio.wait_for(qmp.execute("query-switches"), WAIT)
    latency = await asyncio.wait_for(qmp.execute("query-latency", {"cpus": True}), WAIT)
    paged = await asyncio.wait_for(qmp.execute("query-switches", {"since": 2, "limit": 1}), WAIT)
    check_history(switches, latency, paged)
    try:
        await asyncio.wait_for(qmp.execute("no-such-command"), WAIT)
        check(False, "an unknown command succeeded")
    except ExecuteError as e:
        check(e.error_class == "CommandNotFound", f"unknown command: {e}")
    with qmp.listener(("SHUTDOWN",)) as listener:
        await asyncio.wait_for(qmp.execute("quit"), WAIT)
        shutdown = await asyncio.wait_for(listener.get(), WAIT)
    try:
        await asyncio.wait_for(qmp.disconnect(), WAIT)
    except EOFError:
        # The server hangs up after SHUTDOWN, as QEMU does after quit.
        pass
    return {"events": events, "shutdown": shutdown["data"], "switches": len(switches["switches"]),
            "epochs": len(latency["epochs"])}


def next_event(q, name):
    for _ in range(100):
        event = q.pull_event(wait=WAIT)
        check(event is not None, f"no {name} event within {WAIT} s")
        if event["event"] == name:
            return event
    raise AssertionError(f"no {name} event among 100")


def run_legacy(sock):
    q = QEMUMonitorProtocol(sock)
    q.settimeout(WAIT)
    greeting = q.connect(negotiate=True)
    check("QMP" in greeting, f"greeting: {greeting}")
    for cmd in QUERIES:
        reply = q.cmd_obj({"execute": cmd})
        check("return" in reply and "id" not in reply, f"{cmd}: {reply}")
    events = []
    for seq, mode in enumerate(TOGGLES, 1):
        reply = q.cmd_obj({"execute": "set-mode", "arguments": {"mode": mode}})
        check("return" in reply, f"set-mode {mode}: {reply}")
        check_switch(reply["return"], mode, seq)
        event = next_event(q, "MODE_SWITCHED")
        check(event["data"]["to"] == mode, f"event: {event}")
        events.append(event["event"])
    switches = q.cmd("query-switches")
    latency = q.cmd("query-latency", cpus=True)
    paged = q.cmd("query-switches", since=2, limit=1)
    check_history(switches, latency, paged)
    error = q.cmd_obj({"execute": "no-such-command"})
    check(error["error"]["class"] == "CommandNotFound", f"unknown command: {error}")
    check(q.cmd_obj({"execute": "quit"}) == {"return": {}}, "quit")
    shutdown = next_event(q, "SHUTDOWN")
    try:
        q.close()
    except EOFError:
        pass
    return {"events": events, "shutdown": shutdown["data"], "switches": len(switches["switches"]),
            "epochs": len(latency["epochs"])}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("async", "legacy"):
        sys.exit(__doc__)
    api, sock = sys.argv[1], sys.argv[2]
    seen = asyncio.run(run_async(sock)) if api == "async" else run_legacy(sock)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
