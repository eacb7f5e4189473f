#!/usr/bin/python3
"""Table of tools/bench-swarm's results (medians over runs); optional JSON lines.

  report.py RESULTS.jsonl [OUT.jsonl]
"""
import json
import statistics
import sys


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    out = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
    setup = next(r for r in rows if r["kind"] == "setup")
    runs = [r for r in rows if r["kind"] == "run"]
    medians = []

    def med(tool, scen, key):
        v = [r[key] for r in runs if r["tool"] == tool and r["scenario"] == scen and r.get(key) is not None]
        return (statistics.median(v), len(v), v) if v else (None, 0, [])

    table = []
    for scen, label in (("1to1", "1 seeder -> 1 fetcher"), ("1to4", "1 seeder -> 4 fetchers")):
        for tool, what, key in (("swarmbak", "download", "download_seconds"),
                                ("swarmbak", "fetch incl. restore", "total_seconds"),
                                ("libtorrent", "download", "total_seconds")):
            s, n, all_ = med(tool, scen, key)
            if s is None:
                continue
            b, _, _ = med(tool, scen, "bytes")
            lo, _, _ = med(tool, scen, "lo_bytes")
            m = {"kind": "median", "tool": tool, "scenario": scen, "what": what, "seconds": s,
                 "runs": n, "all_seconds": all_, "bytes": b, "lo_bytes": lo,
                 "mb_per_s": b / s / 1e6}
            if tool == "swarmbak" and scen == "1to1" and key == "total_seconds":
                m["local_refetch_seconds"] = med(tool, scen, "local_refetch_seconds")[0]
            medians.append(m)
            table.append(("%s" % tool, "%s, %s" % (label, what), "%.2f" % s, "%.0f" % m["mb_per_s"],
                          "%d" % b, "-" if lo is None else "%d" % lo,
                          " ".join("%.2f" % x for x in all_)))
    for r in runs:
        if r["scenario"] == "idle_agent":
            table.append(("swarmbak", "idle agent, %d snapshots x %g MiB (%s seeding per tracker): VmRSS %.1f MiB (peak %.1f MiB)"
                          % (r["snapshots"], r["snapshot_bytes"] / 2**20, r.get("seeded_per_tracker"),
                             r["vmrss_kib"] / 1024, r["vmhwm_kib"] / 1024), "", "", "", "", ""))

    fails = [r for r in rows if r["kind"] == "failure"]
    for f in fails:
        table.append((f["tool"], "FAILED attempt (%s, run %d): %s" % (f["scenario"], f["run"], f["detail"][:300]),
                      "", "", "", "", ""))
    print("\nswarmbak %s, libtorrent %s, %d bytes of incompressible data; swarmbak layout: %s"
          % (setup["swarmbak_rev"], setup["libtorrent"], setup["data_bytes"],
             json.dumps(setup["swarmbak_layout"])))
    print("seconds and bytes are medians over runs; MB/s = payload bytes downloaded / seconds (10^6 B);")
    print("bytes = payload bytes downloaded (summed over fetchers); lo bytes = every byte sent over loopback in the scenario (headers, tracker and both directions).\n")
    head = ("tool", "scenario", "seconds", "MB/s", "bytes", "lo bytes", "every run (s)")
    w = [max(len(str(x[i])) for x in table + [head]) for i in range(len(head))]
    for row in [head] + table:
        if row[2] == "" and row is not head:
            print("  ".join([row[0].ljust(w[0]), row[1]]))
        else:
            print("  ".join(str(c).ljust(w[i]) if i < 2 else str(c).rjust(w[i]) for i, c in enumerate(row)))
    if out:
        with open(out, "w") as f:
            for r in rows + medians + [{"kind": "failures", "count": len(fails)}]:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
