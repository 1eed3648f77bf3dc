#!/usr/bin/env python3
"""Self time per operator from a Chrome trace (`ftworker bench --profile FILE`).

Self time is an event's duration minus its direct children's, so nested aten calls are not
counted twice; the table shows where a training step's CPU time goes. `--steps N` divides by
the number of profiled steps (or passes), and `--categories` sums the operators into kinds of
work: matrix products, casts and copies, elementwise, norms, softmax, bookkeeping.
"""
import argparse
import collections
import json


def self_times(events):
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            by_thread[e.get("tid")].append(e)
    totals = collections.defaultdict(float)
    counts = collections.Counter()
    for evs in by_thread.values():
        # Parents start first (and, on ties, last longer).
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [event, children_duration]
        def close(entry):
            event, children = entry
            totals[event["name"]] += event["dur"] - children
            counts[event["name"]] += 1
        for e in evs:
            while stack and stack[-1][0]["ts"] + stack[-1][0]["dur"] <= e["ts"]:
                close(stack.pop())
            if stack:
                stack[-1][1] += e["dur"]
            stack.append([e, 0.0])
        while stack:
            close(stack.pop())
    return totals, counts


# Kinds of work, by operator name (the first matching prefix wins); the rest is bookkeeping:
# allocation, views, dispatch and autograd nodes' own time.
CATEGORIES = [
    ("matrix products (mm, bmm: linear layers, convolutions as GEMMs, attention)",
     ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::mkldnn_convolution",
      "aten::convolution_backward")),
    ("dtype casts and copies (autocast weight/gradient casts, im2col)",
     ("aten::copy_", "aten::_to_copy", "aten::contiguous", "aten::clone", "aten::flip")),
    ("elementwise (GELU, dropout, residual adds, bias, scaling)",
     ("aten::gelu", "aten::mul", "aten::add", "aten::sub", "aten::div", "aten::where",
      "aten::masked_fill", "aten::sum", "aten::mean", "aten::fill_", "aten::zero_")),
    ("norms (layer norm, weight norm) forward and backward",
     ("aten::native_layer_norm", "aten::native_group_norm", "aten::_weight_norm")),
    ("softmax forward and backward", ("aten::_softmax",)),
]


def category(name):
    for label, prefixes in CATEGORIES:
        if name.startswith(prefixes):
            return label
    return "bookkeeping (allocation, views, dispatch, autograd nodes)"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trace")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--steps", type=int, default=1, help="profiled steps (or passes) to divide by")
    parser.add_argument("--categories", action="store_true", help="sum operators by kind of work")
    args = parser.parse_args()
    with open(args.trace) as f:
        events = json.load(f)
    totals, counts = self_times(events)
    if args.categories:
        grouped = collections.defaultdict(float)
        for name, us in totals.items():
            grouped[category(name)] += us
        totals, counts = grouped, collections.Counter()
    grand = sum(totals.values())
    unit = "ms/step" if args.steps > 1 else "self ms"
    width = 80 if args.categories else 50
    print(f"{'operator':<{width}} {'calls':>7} {unit:>10} {'share':>7}")
    for name, us in sorted(totals.items(), key=lambda kv: -kv[1])[: args.top]:
        calls = counts[name] // args.steps if counts[name] else ""
        print(f"{name[:width]:<{width}} {calls:>7} {us / 1000 / args.steps:>10.1f} {100 * us / grand:>6.1f}%")
    print(f"{'total':<{width}} {'':>7} {grand / 1000 / args.steps:>10.1f}")


if __name__ == "__main__":
    main()
