#!/usr/bin/python3
"""Start several commands at the same moment and time each one (tools/bench-swarm).

  batch.py OUTDIR TAG CMD... [';;' TAG CMD...]...

Writes OUTDIR/TAG.out and OUTDIR/TAG.err, and prints one JSON line:
  {"start": T0, "runs": {TAG: {"rc": RC, "seconds": END - T0}}}
(T0 is taken just before the first command is started; monotonic clock). On SIGTERM or
SIGINT every child still running is killed, so nothing outlives the benchmark.
"""
import json
import os
import signal
import subprocess
import sys
import time


def main():
    outdir, rest = sys.argv[1], sys.argv[2:]
    jobs, cur = [], []
    for a in rest + [";;"]:
        if a == ";;":
            if cur:
                jobs.append((cur[0], cur[1:]))
            cur = []
        else:
            cur.append(a)
    procs = {}

    def stop(*_):
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for p in procs.values():
            p.wait()
        sys.exit(1)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    t0 = time.monotonic()
    for tag, cmd in jobs:
        procs[tag] = subprocess.Popen(
            cmd,
            stdout=open(os.path.join(outdir, tag + ".out"), "wb"),
            stderr=open(os.path.join(outdir, tag + ".err"), "wb"),
        )
    runs = {}
    while len(runs) < len(procs):
        for tag, p in procs.items():
            if tag not in runs and p.poll() is not None:
                runs[tag] = {"rc": p.returncode, "seconds": time.monotonic() - t0}
        time.sleep(0.005)
    print(json.dumps({"start": t0, "runs": runs}), flush=True)


if __name__ == "__main__":
    main()
