#!/usr/bin/env python3
"""Measures what fenced ownership costs in time, against real mesh-node processes.

    cargo build --release --bin mesh-node
    python3 bench/failover.py [--runs 3] [--bin target/release/mesh-node]

For each run it starts a 3-node cluster on free 127.0.0.1 ports and measures, from outside:
  join      spawn of a 4th node (with --seeds) until its GET /ready answers 200
  join: handoff   spawn of that node until every id it took over answered 200 from it
  pause     SIGSTOP of an owner for 3 s: until each of its ids answers 200 from another
            node, then SIGCONT until the paused node's GET /ready answers 200 again (it
            rejoins as a new incarnation)
  leave     SIGTERM of an owner until each of its ids answers 200 from another node
  kill      SIGKILL of an owner until each of its ids answers 200 from another node
and prints the median of each over the runs, and how many ids kept their Counter state across
the join and the leave (handed over) and lost it in the kill (expected: all, all, none).
Every process it starts is killed on exit.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

IDS = 12


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=3.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except (urllib.error.URLError, OSError):
        return None, None


class Node:
    def __init__(self, binary, name, seeds):
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [binary, "--node-id", name, "--listen", f"127.0.0.1:{self.port}",
                "--capabilities", "counter"]
        if seeds:
            args += ["--seeds", ",".join(seeds)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def addr(self):
        return f"127.0.0.1:{self.port}"

    def ready(self):
        return http("GET", self.url + "/ready", timeout=1)[0] == 200

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


def wait(cond, limit=30.0, step=0.005):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if cond():
            return time.monotonic() - start
        time.sleep(step)
    raise TimeoutError("condition not met")


def owned_by(entry, owner, n):
    ids, i = [], 0
    while len(ids) < n:
        i += 1
        _, body = http("GET", f"{entry.url}/owner?id=fo-{os.getpid()}-{i}&capability=counter")
        if body and body.get("node") == owner.name:
            ids.append(f"fo-{os.getpid()}-{i}")
    return ids


def call(entry, id_):
    return http("POST", entry.url + "/call",
                {"module": "Counter", "id": id_, "capability": "counter", "timeout_ms": 500})


def until_served(entry, ids, started, where):
    """Seconds from `started` until every id answered 200 from a node `where` accepts, and
    how many of them continued their count (state handed over) rather than starting at 1."""
    pending, last, kept = set(ids), 0.0, 0
    while pending:
        for id_ in list(pending):
            status, body = call(entry, id_)
            if status == 200 and where(body["node"]):
                pending.discard(id_)
                last = time.monotonic() - started
                kept += body["result"]["ok"] > 1
        if time.monotonic() - started > 30:
            raise TimeoutError(f"ids never moved: {sorted(pending)}")
    return last, kept


def until_served_elsewhere(entry, victim, ids, started):
    return until_served(entry, ids, started, lambda node: node != victim.name)


def one_run(binary, state):
    nodes = []
    try:
        first = Node(binary, "a", [])
        nodes.append(first)
        wait(first.ready)
        for name in ["b", "c"]:
            nodes.append(Node(binary, name, [first.addr()]))
        wait(lambda: all(n.ready() for n in nodes))
        wait(lambda: all(len(http("GET", n.url + "/cluster")[1]["members"]) == 3 for n in nodes))
        figures = {}

        entry = nodes[0]
        before = [f"join-{os.getpid()}-{i}" for i in range(4 * IDS)]
        for id_ in before:
            call(entry, id_)
        started = time.monotonic()
        d = Node(binary, "d", [first.addr()])
        nodes.append(d)
        figures["join"] = wait(d.ready)
        moved = [i for i in before
                 if http("GET", f"{entry.url}/owner?id={i}&capability=counter")[1]["node"] == "d"]
        figures["join: handoff"], kept = until_served(entry, moved, started, lambda n: n == "d")
        state[0].append(f"join {kept}/{len(moved)}")

        # Pause first, while 3 of the 4 members stay up: a quorum of 4.
        victim = nodes[1]
        ids = owned_by(entry, victim, IDS)
        for id_ in ids:
            call(entry, id_)
        started = time.monotonic()
        victim.proc.send_signal(signal.SIGSTOP)
        figures["pause: failover"], _ = until_served_elsewhere(entry, victim, ids, started)
        time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
        victim.proc.send_signal(signal.SIGCONT)
        figures["pause: rejoin after SIGCONT"] = wait(victim.ready)

        # Then a graceful leave (the leaver stops counting toward quorums) and a kill (the
        # dead member keeps counting: 2 of 3 remain).
        for name, sig in [("leave", signal.SIGTERM), ("kill", signal.SIGKILL)]:
            victim = nodes[-1]
            ids = owned_by(entry, victim, IDS)
            for id_ in ids:
                call(entry, id_)
            started = time.monotonic()
            victim.proc.send_signal(sig)
            figures[name], kept = until_served_elsewhere(entry, victim, ids, started)
            state[0].append(f"{name} {kept}/{len(ids)}")
            victim.proc.wait()
            nodes.pop()
        return figures
    finally:
        for n in nodes:
            n.kill()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bin", default="target/release/mesh-node")
    args = parser.parse_args()
    states = []
    runs = []
    for _ in range(args.runs):
        states.append([[]])
        runs.append(one_run(args.bin, states[-1]))
    print(f"{'what':32} {'median':>8}   runs (s)")
    for key in runs[0]:
        values = [r[key] for r in runs]
        shown = " ".join(f"{v:.3f}" for v in values)
        print(f"{key:32} {statistics.median(values):8.3f}   {shown}")
    for n, state in enumerate(states):
        print(f"run {n + 1}: ids that kept their count: " + ", ".join(state[0]))


if __name__ == "__main__":
    sys.exit(main())
