#!/usr/bin/env python3
"""Summary of a benchmark results file (bench/lib.sh writes it).

Lines: METRIC VARIANT ROUND VALUE UNIT LOAD1 (tab separated), plus
"#ref METRIC VARIANT lower|higher" (the reference of a metric's ratios) and
"#note TEXT".  Prints, per metric, one row per variant: median, min-max,
spread ((max-min)/median), rounds, and the speed relative to the reference
as the median (and range) of the per-round ratios: in an interleaved run,
the two samples of one round saw the same background load, so the
per-round ratio is the meaningful one.  "speed" > 1 means better than the
reference (ref/value for times, value/ref for rates).  Then the samples
themselves, round by round, with the load average at each.
"""
import statistics
import sys
from collections import OrderedDict, defaultdict


def fmt(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.1f" % v
    if a >= 1:
        return "%.2f" % v
    return "%.3g" % v


def main(path):
    data = OrderedDict()          # metric -> variant -> {round: (value, load)}
    units = {}
    refs = {}
    notes = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            p = line.split("\t")
            if p[0] == "#ref":
                refs[p[1]] = (p[2], p[3])
                continue
            if p[0] == "#note":
                notes.append(p[1])
                continue
            metric, variant, rnd, value, unit, load = p[:6]
            try:
                val = float(value)
            except ValueError:
                continue
            data.setdefault(metric, OrderedDict()).setdefault(variant, {})[int(rnd)] = (val, load)
            units[metric] = unit
    for metric, variants in data.items():
        ref = refs.get(metric)
        print("\n%s [%s]%s" % (metric, units[metric],
                                "  (reference: %s, %s is better)" % (ref[0], ref[1]) if ref else ""))
        print("| variant | median | min - max | spread | rounds | speed vs ref: median (range) |")
        print("|---|---:|---:|---:|---:|---|")
        for variant, samples in variants.items():
            vals = [v for v, _ in samples.values()]
            med = statistics.median(vals)
            spread = (max(vals) - min(vals)) / med * 100 if med else 0
            speed = ""
            if ref and variant != ref[0] and ref[0] in variants:
                rs = []
                for rnd, (v, _) in samples.items():
                    if rnd in variants[ref[0]] and v and variants[ref[0]][rnd][0]:
                        r = variants[ref[0]][rnd][0]
                        rs.append(r / v if ref[1] == "lower" else v / r)
                if rs:
                    speed = "%.2fx (%.2f - %.2f)" % (statistics.median(rs), min(rs), max(rs))
            elif ref and variant == ref[0]:
                speed = "reference"
            print("| %s | %s | %s - %s | %.0f%% | %d | %s |" % (
                variant, fmt(med), fmt(min(vals)), fmt(max(vals)), spread, len(vals), speed))
    print("\nsamples by round (value, load average at its start):")
    for metric, variants in data.items():
        rounds = defaultdict(list)
        for variant, samples in variants.items():
            for rnd, (v, load) in samples.items():
                rounds[rnd].append("%s %s (%s)" % (variant, fmt(v), load))
        print("  %s: %s" % (metric, " | ".join("r%d: %s" % (r, ", ".join(rounds[r]))
                                                for r in sorted(rounds))))
    for n in notes:
        print("note: " + n)


if __name__ == "__main__":
    main(sys.argv[1])
