#!/usr/bin/python3
"""Table of tools/bench-tracker's results (medians over runs); optional JSON lines.

  report.py RESULTS.jsonl [OUT.jsonl]

Exits 1 if a measurement had wrk errors other than opentracker's close-delimited replies
(wrk counts each as a read error), opened fewer TCP connections than it made requests, or
left fewer peers than its requests make (announces refused, say for a bad passkey, are
HTTP 200 too: only the scrape shows them): grow, about one per request (the private
tracker: up to 8 entries per machine, its cap, and never more); org, at least 90% of the
distinct peers that many random re-announces reach, 10 T (1 - exp(-requests / 10 T)).
"""
import json
import math
import statistics
import sys


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    out = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    setup = next(r for r in rows if r["kind"] == "setup")
    runs = [r for r in rows if r["kind"] == "run"]
    problems = []
    for r in runs:
        w = r["wrk"]
        r["rps"] = w["requests"] / (w["duration_us"] / 1e6)
        e = dict(w["errors"])
        if r["tracker"] == "opentracker":
            e["read"] = 0  # it closes instead of sending Content-Length
        if any(e.values()):
            problems.append("%s %s run %d: wrk errors %s" % (r["tracker"], r["scenario"], r["run"], e))
        if r["tcp_connections"] < 0.98 * w["requests"]:
            problems.append("%s %s run %d: %d TCP connections for %d requests" % (
                r["tracker"], r["scenario"], r["run"], r["tcp_connections"], w["requests"]))
        peers, n = r["peers_after"], w["requests"]
        if r["scenario"] == "grow":
            cap = None
            if r["tracker"] == "swarmbak" and setup["private"]:
                cap = setup["cap_per_machine"] * setup["grow_machines"]
            want = min(n, cap) if cap else n
            if peers < 0.9 * want or (cap and peers > cap):
                problems.append("%s grow run %d: %d peers in the swarm after %d requests (expected about %d%s)" % (
                    r["tracker"], r["run"], peers, n, want, ", the cap" if cap and want == cap else ""))
        else:
            slots = 10 * setup["torrents"]
            want = slots * (1 - math.exp(-n / slots))
            if peers < 0.9 * want or peers > slots + 1:  # + the pre-flight check's peer
                problems.append("%s org run %d: %d peers in the %d torrents after %d requests (expected about %d)" % (
                    r["tracker"], r["run"], peers, setup["torrents"], n, want))
    medians = []
    table = []
    if setup.get("private"):
        labels = {"grow": "(a) one swarm, %d machines" % setup["grow_machines"],
                  "org": "(b) %d torrents x 10 peers, %d machines" % (setup["torrents"], setup["org_machines"])}
    else:
        labels = {"grow": "(a) one growing swarm", "org": "(b) %d torrents x 10 peers" % setup["torrents"]}
    for scen in ("grow", "org"):
        for tracker in ("swarmbak", "opentracker"):
            rs = [r for r in runs if r["tracker"] == tracker and r["scenario"] == scen]
            if not rs:
                continue
            med = lambda f: statistics.median(f(r) for r in rs)
            m = {"kind": "median", "tracker": tracker, "scenario": scen, "runs": len(rs),
                 "rps": med(lambda r: r["rps"]),
                 "p50_us": med(lambda r: r["wrk"]["latency_us"]["p50"]),
                 "p99_us": med(lambda r: r["wrk"]["latency_us"]["p99"]),
                 "all_rps": [round(r["rps"]) for r in rs],
                 "conns_per_request": med(lambda r: r["tcp_connections"] / max(1, r["wrk"]["requests"]))}
            m["peers_after"] = med(lambda r: r["peers_after"])
            medians.append(m)
            table.append((labels[scen], tracker, "%.0f" % m["rps"], "%.2f" % (m["p50_us"] / 1000),
                          "%.2f" % (m["p99_us"] / 1000), "%.2f" % m["conns_per_request"],
                          "%d" % m["peers_after"],
                          " ".join(str(x) for x in m["all_rps"])))
    if setup.get("private"):
        mode = ("private (a passkey per machine, checked; signed publishes; database on %s)"
                % setup.get("data_fs", "?"))
    else:
        mode = "--open (no passkeys, unsigned publishes)"
    print("\nswarmbak %s tracker %s, --threads %s, opentracker %s, wrk %s; %d CPUs; wrk -t%d -c%d, %d s per measurement, "
          "numwant %d, source addresses spread (grow): %s; %d torrents published in %s s"
          % (setup["swarmbak_rev"], mode, setup.get("tracker_threads", "default"), setup["opentracker"], setup["wrk"],
             setup["cpus"], setup["threads"],
             setup["connections"], setup["duration"], setup["numwant"], bool(setup["spread"]),
             setup["torrents"], setup["publish_seconds"]))
    print("requests/s and latency are medians over runs; conns/req = TCP connections opened per request.\n")
    head = ("scenario", "tracker", "req/s", "p50 ms", "p99 ms", "conns/req", "peers after", "every run (req/s)")
    w = [max(len(str(x[i])) for x in table + [head]) for i in range(len(head))]
    for row in [head] + table:
        print("  ".join(str(c).ljust(w[i]) if i < 2 else str(c).rjust(w[i]) for i, c in enumerate(row)))
    for p in problems:
        print("PROBLEM: " + p)
    if out:
        with open(out, "w") as f:
            for r in rows + medians + [{"kind": "problems", "list": problems}]:
                f.write(json.dumps(r) + "\n")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
