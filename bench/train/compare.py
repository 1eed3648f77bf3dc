#!/usr/bin/python3
"""Runs `ftworker bench` (bf16 by default) and the eager-PyTorch peers (bf16 autocast and fp32) on
identical work and prints the figures and the ratios. A benchmark, not a test.

  bench/train/compare.py --ftworker build/bin/ftworker --model hubert-base --batch-size 4 \
      --seconds 3 --steps 5
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "model"))
from matrix_floor import peak_gflops, report  # noqa: E402


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--ftworker", default=os.path.join(here, "..", "..", "build", "bin", "ftworker"))
    p.add_argument("--model", default="hubert-base")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    # Both sides get the same explicit thread count (Debian's torch defaults to 1).
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--precision", default="auto")
    a = p.parse_args()
    common = ["--batch-size", str(a.batch_size), "--seconds", str(a.seconds),
              "--grad-accum", str(a.grad_accum), "--steps", str(a.steps),
              "--warmup", str(a.warmup), "--threads", str(a.threads)]
    ours = run_json([a.ftworker, "bench", "--model", a.model, "--precision", a.precision,
                     "--json"] + common)
    # Epochs 2+ of a job: the frozen feature encoder's output is reused.
    reused = run_json([a.ftworker, "bench", "--model", a.model, "--precision", a.precision,
                       "--reuse-features", "--json"] + common)
    # The peers a user would pick: eager fp32, and eager bf16 autocast (HF Trainer's bf16=True).
    peers = {precision: run_json(["/usr/bin/python3", os.path.join(here, "peer_train.py"),
                                  "--model", a.model, "--precision", precision] + common)
             for precision in ("bf16", "fp32")}
    # Ratios from the median step: a shared host stalls now and then, and a mean over a few
    # steps takes whichever side was unlucky; both means are printed too.
    def per_sec(r):
        return a.batch_size * a.grad_accum * 1000.0 / r["step_ms_median"]

    for name, r in ((f"ftworker bench ({a.precision})", ours),
                    ("ftworker, epochs 2+ (cached CNN)", reused),
                    ("eager PyTorch bf16 autocast peer", peers["bf16"]),
                    ("eager PyTorch fp32 peer", peers["fp32"])):
        print(f"{name + ':':34} {per_sec(r):.2f} samples/s (median {r['step_ms_median']:.0f} ms/step, "
              f"mean {r['step_ms']:.0f}, {r['threads']} threads)")
    for precision, peer in peers.items():
        print(f"ratio vs the {precision} peer: {per_sec(ours) / per_sec(peer):.2f}x "
              f"(epochs 2+: {per_sec(reused) / per_sec(peer):.2f}x); "
              f"from means: {ours['samples_per_sec'] / peer['samples_per_sec']:.2f}x "
              f"({reused['samples_per_sec'] / peer['samples_per_sec']:.2f}x)")
    # The bound on any such ratio: the step's matrix products alone at this host's bf16 GEMM
    # rate, measured now.
    gflops = peak_gflops(a.threads)
    for mode, r in (("train", ours), ("train-cached", reused)):
        floor_ms, table = report(a.model, a.batch_size * a.grad_accum, a.seconds, mode, gflops)
        print(table)
        print(f"  ftune's step takes {r['step_ms_median'] / floor_ms:.2f}x the floor; no implementation "
              f"of these products beats the bf16 peer by more than "
              f"{peers['bf16']['step_ms_median'] / floor_ms:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
