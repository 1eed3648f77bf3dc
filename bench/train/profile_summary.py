#!/usr/bin/env python3
"""Self time per operator from a Chrome trace (`ftworker bench --profile FILE`).

Self time is an event's duration minus its direct children's, so nested aten calls are not
counted twice; the table shows where a training step's CPU time goes.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trace")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    with open(args.trace) as f:
        events = json.load(f)
    totals, counts = self_times(events)
    grand = sum(totals.values())
    print(f"{'operator':<50} {'calls':>7} {'self ms':>10} {'share':>7}")
    for name, us in sorted(totals.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{name[:50]:<50} {counts[name]:>7} {us / 1000:>10.1f} {100 * us / grand:>6.1f}%")
    print(f"{'total':<50} {'':>7} {grand / 1000:>10.1f}")


if __name__ == "__main__":
    main()
