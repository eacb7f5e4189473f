#!/usr/bin/env python3
"""Medians of several bench-backup / bench-swarm --out files per variant, side by side.

    tools/ab-table.py before=/tmp/bb-before-*.jsonl after=/tmp/bb-after-*.jsonl

Each argument is NAME=GLOB. Rows: (step, tool); cells: median seconds and the runs.
"""
import glob
import json
import statistics
import sys

variants = []
for arg in sys.argv[1:]:
    name, pattern = arg.split("=", 1)
    rows = {}
    for path in sorted(glob.glob(pattern)):
        for line in open(path):
            d = json.loads(line)
            if d.get("median") or d.get("seconds") is None:
                continue
            key = (d.get("step") or d.get("scenario"), d.get("tool"), d.get("metric", "seconds"))
            rows.setdefault(key, []).append(d["seconds"])
    variants.append((name, rows))
keys = []
for _, rows in variants:
    keys += [k for k in rows if k not in keys]
print("| step | tool | " + " | ".join(f"{n} (median; runs)" for n, _ in variants) + " | change |")
print("|---|---|" + "---|" * len(variants) + "---|")
for k in keys:
    cells, meds = [], []
    for _, rows in variants:
        v = rows.get(k, [])
        m = statistics.median(v) if v else None
        meds.append(m)
        cells.append(f"{m:.2f} ({', '.join(f'{x:.2f}' for x in v)})" if v else "-")
    ch = ""
    if len(meds) == 2 and meds[0] and meds[1]:
        ch = f"{(meds[1] / meds[0] - 1) * 100:+.0f}%"
    print(f"| {k[0]} | {k[1]} | " + " | ".join(cells) + f" | {ch} |")
