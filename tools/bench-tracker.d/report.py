#!/usr/bin/python3
"""Table of tools/bench-tracker's results (medians over runs); optional JSON lines.

  report.py RESULTS.jsonl [OUT.jsonl]

Exits 1 if a measurement had wrk errors other than opentracker's close-delimited replies
(wrk counts each as a read error), opened fewer TCP connections than it made requests, or
(grow) left a swarm much smaller than the number of requests.
"""
import json
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
        if r["scenario"] == "grow" and r["swarm_peers_after"] < 0.9 * w["requests"]:
            problems.append("%s grow run %d: %d peers in the swarm after %d requests" % (
                r["tracker"], r["run"], r["swarm_peers_after"], w["requests"]))
    medians = []
    table = []
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
            if scen == "grow":
                m["swarm_peers_after"] = med(lambda r: r["swarm_peers_after"])
            medians.append(m)
            table.append((labels[scen], tracker, "%.0f" % m["rps"], "%.2f" % (m["p50_us"] / 1000),
                          "%.2f" % (m["p99_us"] / 1000), "%.2f" % m["conns_per_request"],
                          "%d" % m["swarm_peers_after"] if scen == "grow" else "-",
                          " ".join(str(x) for x in m["all_rps"])))
    print("\nswarmbak %s, opentracker %s, wrk %s; %d CPUs; wrk -t%d -c%d, %d s per measurement, numwant %d, "
          "source addresses spread (grow): %s, passkeys: %s; %d torrents published in %s s"
          % (setup["swarmbak_rev"], setup["opentracker"], setup["wrk"], setup["cpus"], setup["threads"],
             setup["connections"], setup["duration"], setup["numwant"], bool(setup["spread"]),
             setup["passkeys"], setup["torrents"], setup["publish_seconds"]))
    print("requests/s and latency are medians over runs; conns/req = TCP connections opened per request.\n")
    head = ("scenario", "tracker", "req/s", "p50 ms", "p99 ms", "conns/req", "swarm after", "every run (req/s)")
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
