#!/usr/bin/env python3
"""The arithmetic behind swarmbak's default erasure coding (k, m) and copies (T).

  python3 tools/durability.py            # every table, as pasted in protocol-spec/durability.md
  python3 tools/durability.py --quick    # skip the Monte Carlo rows (N > 16 machines)

Model (see protocol-spec/durability.md for the argument):
  * A stripe has k data + m parity shards; any k rebuild it. Each shard is held by T
    distinct machines other than the owner (the owner is gone: stolen, dead).
  * A machine is online with probability p, independently of the others (the weak point:
    power cuts, holidays and office-wide outages are correlated).
  * Independent-shard model: a shard is reachable if one of its T holders is online,
    q = 1 - (1-p)^T; a stripe is recoverable if >= k of its k+m shards are reachable,
    P = P[Binomial(k+m, q) >= k]; a snapshot of S stripes placed on unrelated machines is
    recoverable with P^S (a lower bound for any placement, by the Harris-FKG inequality:
    the events "stripe i is recoverable" all grow with the set of online machines).
  * Office model: N machines other than the owner; placement is round-robin: the g-th
    shard copy of the snapshot, g = (stripe*(k+m) + shard)*T + copy, goes to machine
    g mod N (so the T copies of a shard are on T distinct machines when N >= T, and the
    (k+m)*T copies of a stripe on distinct machines when N >= (k+m)*T). A snapshot is
    recoverable if the online machines together hold >= k distinct shards of every stripe.
    Exact (all 2^N online sets) for N <= 16, seeded Monte Carlo above that.
  * Durability is the same arithmetic with p = the probability that a machine is NOT
    permanently lost (dead disk, stolen, reimaged, retired) within one repair interval.

Python 3 standard library only; output is deterministic.
"""
import argparse
import itertools
import math
import random
import sys
from functools import lru_cache

CANDIDATES = [(4, 2), (8, 4), (8, 8), (10, 4), (10, 6), (16, 8)]
COPIES = [1, 2, 3, 4]
SNAPSHOTS = [1, 32, 256, 4096]  # stripes; at 8 MiB of data per stripe: 8 MiB .. 32 GiB
P_ONLINE = 0.5  # LISA '04: ~300 of 600 systems online on average


# ------------------------------------------------------------------------------------
# Independent-shard model
# ------------------------------------------------------------------------------------

def binom_tail_lt(n, k, q):
    """P[Binomial(n, q) < k], summed directly (no 1 - x cancellation)."""
    return sum(math.comb(n, i) * q ** i * (1 - q) ** (n - i) for i in range(0, k))


def shard_unreachable(p, T):
    return (1 - p) ** T


def stripe_fail(k, m, T, p):
    """P[a stripe cannot be rebuilt] = P[fewer than k of k+m shards reachable]."""
    u = shard_unreachable(p, T)
    # sum over the number i of reachable shards < k, written in u to keep precision
    n = k + m
    return sum(math.comb(n, i) * (1 - u) ** i * u ** (n - i) for i in range(0, k))


def snapshot_fail(f, S):
    """1 - (1-f)^S without cancellation."""
    if f >= 1:
        return 1.0
    return -math.expm1(S * math.log1p(-f))


def overhead(k, m, T):
    return T * (k + m) / k


# ------------------------------------------------------------------------------------
# Office model: N machines, round-robin placement
# ------------------------------------------------------------------------------------

def placement_period(k, m, T, N, placement):
    n = k + m
    if placement == "rr":
        return N // math.gcd(N, n * T)
    c = math.comb(N, T)
    return c // math.gcd(c, n)


def stripe_patterns(k, m, T, N, S, placement="rr"):
    """The distinct stripes of an S-stripe snapshot as tuples of per-shard holder bitmasks.

    rr (round-robin): copy c of shard j of stripe s goes to machine g mod N, with
        g = (s*(k+m) + j)*T + c; it repeats every N / gcd(N, (k+m)T) stripes.
    spread: shard number s*(k+m) + j gets the next T-subset of the N machines, taking all
        C(N, T) subsets in turn (lexicographic order), so two shards share all their
        holders only once every C(N, T) shards."""
    n = k + m
    period = placement_period(k, m, T, N, placement)
    subsets = list(itertools.combinations(range(N), T)) if placement == "spread" else None
    pats = set()
    for s in range(min(S, period)):
        masks = []
        for j in range(n):
            mask = 0
            if placement == "rr":
                for c in range(T):
                    g = (s * n + j) * T + c
                    mask |= 1 << (g % N)
            else:
                for i in subsets[(s * n + j) % len(subsets)]:
                    mask |= 1 << i
            masks.append(mask)
        pats.add(tuple(masks))
    return sorted(pats)


def snapshot_ok(pats, k, online):
    for masks in pats:
        reach = 0
        for mask in masks:
            if mask & online:
                reach += 1
        if reach < k:
            return False
    return True


@lru_cache(maxsize=None)
def office_fail_exact(k, m, T, N, S, p, placement="rr"):
    """Exact P[snapshot not recoverable] over all 2^N online sets."""
    pats = stripe_patterns(k, m, T, N, S, placement)
    # weight by the number of online machines
    fail = 0.0
    for online in range(1 << N):
        if not snapshot_ok(pats, k, online):
            c = bin(online).count("1")
            fail += p ** c * (1 - p) ** (N - c)
    return fail


def office_fail_mc(k, m, T, N, S, p, trials, seed=1):
    """Monte Carlo estimate of P[snapshot not recoverable] and its standard error."""
    pats = stripe_patterns(k, m, T, N, S)
    rng = random.Random(seed * 1_000_003 + N * 101 + k * 7 + m * 3 + T)
    fails = 0
    for _ in range(trials):
        online = 0
        for i in range(N):
            if rng.random() < p:
                online |= 1 << i
        if not snapshot_ok(pats, k, online):
            fails += 1
    f = fails / trials
    return f, math.sqrt(max(f * (1 - f), 1 / trials) / trials)


def office_fail(k, m, T, N, S, p, trials):
    if N <= 16:
        return office_fail_exact(k, m, T, N, S, p), 0.0
    return office_fail_mc(k, m, T, N, S, p, trials)


# ------------------------------------------------------------------------------------
# Formatting
# ------------------------------------------------------------------------------------

def fmt_p(x):
    """A failure probability: 0, 1.2e-05, 0.16, 1."""
    if x <= 0:
        return "0"
    if x >= 0.9995:
        return "1"
    if x >= 0.01:
        return f"{x:.2f}"
    return f"{x:.1e}"


def fmt_ok(f):
    """Recoverable probability as a percentage, keeping the interesting digits."""
    ok = 1 - f
    if f <= 0:
        return "100%"
    if f < 1e-6:
        return f"1-{f:.0e}"
    if ok >= 0.99:
        return f"{100 * ok:.4f}%"
    return f"{100 * ok:.1f}%"


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [line, sep]
    for r in rows:
        out.append("| " + " | ".join(str(c).rjust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------

def t_availability(p):
    header = ["k+m", "T", "overhead", "shard unreachable"] + [
        f"S={S} ({S * 8 // 1024} GiB)" if S >= 128 else f"S={S}" for S in SNAPSHOTS
    ]
    rows = []
    for k, m in CANDIDATES:
        for T in COPIES:
            f = stripe_fail(k, m, T, p)
            rows.append(
                [f"{k}+{m}", T, f"{overhead(k, m, T):.2f}x", fmt_p(shard_unreachable(p, T))]
                + [fmt_p(snapshot_fail(f, S)) for S in SNAPSHOTS]
            )
    return table(header, rows)


def t_same_overhead(p):
    header = ["k+m", "T", "overhead", "machines per stripe", "stripe fails", "S=4096 (indep.)"]
    rows = []
    for k, m, T in [
        (4, 2, 2), (8, 4, 2), (16, 8, 2), (8, 16, 1), (16, 32, 1),
        (8, 8, 2), (8, 4, 3), (8, 4, 4), (10, 4, 3), (16, 8, 3),
    ]:
        f = stripe_fail(k, m, T, p)
        rows.append([f"{k}+{m}", T, f"{overhead(k, m, T):.2f}x", (k + m) * T, fmt_p(f),
                     fmt_p(snapshot_fail(f, 4096))])
    return table(header, rows)


def t_p_sweep():
    ps = [0.3, 0.5, 0.7, 0.8, 0.9]
    header = ["k+m", "T"] + [f"p={p}" for p in ps]
    rows = []
    for k, m, T in [(8, 4, 1), (8, 4, 2), (8, 4, 3), (8, 8, 2), (4, 2, 2), (16, 8, 2)]:
        rows.append([f"{k}+{m}", T] + [fmt_p(stripe_fail(k, m, T, p)) for p in ps])
    return table(header, rows)


def t_office(k, m, T, p, Ns, trials, spread_max):
    header = ["N machines", "rr period", "rr S=1", "rr S=32", "rr S=4096",
              "spread S=1", "spread S=4096", "method"]
    rows = []
    for N in Ns:
        if N < T:
            continue
        cells = []
        mc = False
        for S in (1, 32, 4096):
            f, se = office_fail(k, m, T, N, S, p, trials)
            mc = mc or se > 0
            cells.append(fmt_p(f) + (f" ±{se:.0e}" if se > 0 and f > 0 else ""))
        for S in (1, 4096):
            if N <= spread_max:
                cells.append(fmt_p(office_fail_exact(k, m, T, N, S, p, "spread")))
            else:
                cells.append("")
        period = placement_period(k, m, T, N, "rr")
        rows.append([N, period] + cells + ["MC" if mc else "exact"])
    f = stripe_fail(k, m, T, p)
    indep = [fmt_p(snapshot_fail(f, S)) for S in (1, 32, 4096)]
    rows.append(["indep. shards", "-"] + indep + [fmt_p(f), indep[-1], "formula"])
    return table(header, rows)


def t_durability():
    # annual permanent-loss rate of a machine, repair interval in days
    lams = [0.05, 0.30]
    repairs = [1, 7, 30]
    header = ["k+m", "T"] + [f"{int(l * 100)}%/y, {r}d" for l in lams for r in repairs]
    rows = []
    for k, m, T in [(8, 4, 1), (8, 4, 2), (8, 4, 3), (8, 8, 2), (4, 2, 2), (10, 4, 2), (16, 8, 2)]:
        cells = []
        for lam in lams:
            for r in repairs:
                loss = -math.expm1(-lam * r / 365)  # P[a machine is lost within r days]
                f = stripe_fail(k, m, T, 1 - loss)  # P[a stripe is lost within r days]
                # a 32 GiB snapshot (4096 stripes) over a year of repair intervals
                cells.append(fmt_p(snapshot_fail(f, 4096 * 365 / r)))
        rows.append([f"{k}+{m}", T] + cells)
    return table(header, rows)


def t_durability_office(trials):
    # small offices: exact, 4096 stripes; lam 30 %/y, repair within 7 days
    lam, r = 0.30, 7
    loss = -math.expm1(-lam * r / 365)
    header = ["N machines", "T=1", "T=2", "T=3"]
    rows = []
    for N in [2, 3, 4, 5, 6, 8, 12, 16]:
        cells = []
        for T in (1, 2, 3):
            if N < T:
                cells.append("-")
                continue
            f = office_fail_exact(8, 4, T, N, 4096, 1 - loss)
            cells.append(fmt_p(snapshot_fail(f, 365 / r)))
        rows.append([N] + cells)
    return table(header, rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--p", type=float, default=P_ONLINE, help="probability a machine is online")
    ap.add_argument("--trials", type=int, default=20000, help="Monte Carlo trials for N > 16")
    ap.add_argument("--quick", action="store_true", help="no Monte Carlo rows")
    a = ap.parse_args()
    p = a.p
    big = [] if a.quick else [24, 48, 100, 300]

    print(f"# swarmbak durability tables (tools/durability.py, p_online={p})\n")
    print("## A. Could the machine be restored right now? Independent-shard model")
    print(f"P[snapshot NOT recoverable], p_online={p}; S stripes of up to 8 MiB data each.\n")
    print(t_availability(p))
    print("\n## B. Same and higher storage overhead, compared (p_online=%s)\n" % p)
    print(t_same_overhead(p))
    print("\n## C. P[stripe NOT recoverable] as the share of machines online varies\n")
    print(t_p_sweep())
    for (k, m, T, smax) in [(8, 4, 2, 16), (8, 4, 3, 12), (8, 8, 2, 14), (4, 2, 2, 16)]:
        print(f"\n## D. Office of N machines other than the owner: k={k} m={m} T={T}, "
              f"p_online={p}")
        print("P[snapshot of S stripes NOT recoverable] with round-robin (rr) and spread "
              "placement;\n'rr period' = distinct stripes in the round-robin pattern.\n")
        print(t_office(k, m, T, p, [2, 3, 4, 5, 6, 8, 10, 12, 14, 16] + big, a.trials, smax))
    print("\n## E. Durability: P[a 32 GiB snapshot (4096 stripes) is LOST within a year]")
    print("annual machine-loss rate, repair interval; independent losses\n")
    print(t_durability())
    print("\n## F. Durability in a small office: k=8 m=4, 4096 stripes, 30 %/y machine loss,")
    print("repair within 7 days, round-robin over N machines (exact); P[lost within a year]\n")
    print(t_durability_office(a.trials))


if __name__ == "__main__":
    sys.exit(main())
