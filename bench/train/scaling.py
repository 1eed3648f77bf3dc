#!/usr/bin/python3
"""Data-parallel scaling on one machine: the same optimizer steps (the same global batch) as
1 process x 1 thread, as 2 ranks x 1 thread (Gloo over loopback, `ftworker bench --world-size
2`, batch per rank halved), and as 1 process x 2 threads, the other way to use the same two
cores. Prints samples/s (medians over --repeat runs) and the ratios. A benchmark, not a test.

  bench/train/scaling.py --model hubert-base --batch-size 8 --seconds 3 --steps 4 --repeat 3
"""
import argparse
import os
import statistics

from compare import run_json  # this folder's benchmark runner


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ftworker", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "..", "..", "build", "bin", "ftworker"))
    p.add_argument("--model", default="hubert-base")
    p.add_argument("--batch-size", type=int, default=8, help="global batch (even)")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--precision", default="auto")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    common = ["--model", a.model, "--seconds", str(a.seconds), "--steps", str(a.steps),
              "--warmup", str(a.warmup), "--precision", a.precision, "--json"]
    setups = {
        "1 process x 1 thread": ["--batch-size", str(a.batch_size), "--threads", "1"],
        "2 ranks x 1 thread": ["--batch-size", str(a.batch_size // 2), "--threads", "1",
                               "--world-size", "2", "--devices", "cpu,cpu"],
        "1 process x 2 threads": ["--batch-size", str(a.batch_size), "--threads", "2"],
    }
    rates = {name: [] for name in setups}
    for _ in range(a.repeat):
        for name, flags in setups.items():
            rates[name].append(run_json([a.ftworker, "bench"] + common + flags)["samples_per_sec"])
    base = statistics.median(rates["1 process x 1 thread"])
    print(f"{a.model}, global batch {a.batch_size} x {a.seconds:g} s, {a.precision} precision, "
          f"{a.steps} steps after {a.warmup} warm-up, median of {a.repeat} runs")
    for name in setups:
        median = statistics.median(rates[name])
        runs = " ".join(f"{r:.2f}" for r in rates[name])
        print(f"{name:>22}: {median:6.2f} samples/s  ({median / base:.2f}x)   runs: {runs}")


if __name__ == "__main__":
    main()
