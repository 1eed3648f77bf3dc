#!/usr/bin/python3
"""The matrix-product floor of HuBERT work on this host: how many FLOPs a training step or a
forward pass spends in matrix products (linear layers, convolutions, attention), this host's
measured bf16 GEMM rate, and so the time no implementation can beat. Every ratio a benchmark
reports against a peer doing the same products is bounded by peer_ms / floor_ms.

  bench/model/matrix_floor.py --threads 2                # hubert-base, both tables
  bench/model/matrix_floor.py --mode train --batch-size 4 --seconds 3

compare.py (training) and model_hubert_bench (inference) print the same floor beside their runs.
"""
import argparse
import os
import time

DIMS = {
    # conv (dim, kernel, stride) per feature-encoder layer, hidden, layers, intermediate,
    # positional conv (kernel, groups), classifier projection.
    "hubert-base": dict(conv=[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2,
                        hidden=768, layers=12, intermediate=3072, pos=(128, 16), proj=256),
    "hubert-large": dict(conv=[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2,
                         hidden=1024, layers=24, intermediate=4096, pos=(128, 16), proj=256),
}


def matrix_flops(model, batch, seconds, mode):
    """FLOPs per part of one training step (mode "train": frozen feature encoder, as ftune's
    recipe; "train-cached": epochs 2+, the encoder's output reused) or forward pass ("infer")."""
    d = DIMS[model]
    samples = int(round(seconds * 16000))
    cnn, frames, channels = 0, samples, 1
    for dim, kernel, stride in d["conv"]:
        frames = (frames - kernel) // stride + 1
        cnn += frames * dim * channels * kernel * 2
        channels = dim
    h, t = d["hidden"], frames
    kernel, groups = d["pos"]
    parts = {
        "feature encoder (CNN)": cnn,
        "feature projection": t * channels * h * 2,
        "positional conv": t * h * (h // groups) * kernel * 2,
        "transformer linear layers": d["layers"] * t * (4 * h * h + 2 * h * d["intermediate"]) * 2,
        "attention (QK^T, PV)": d["layers"] * 2 * t * t * h * 2,
        "head": t * h * d["proj"] * 2,
    }
    if mode == "infer":
        factor = {k: 1 for k in parts}
    else:
        # Backward costs two products per forward one (input and weight gradients), except where
        # no input gradient is needed: the frozen encoder has no backward at all, and the feature
        # projection's input (the encoder output) needs no gradient.
        factor = {k: 3 for k in parts}
        factor["feature encoder (CNN)"] = 0 if mode == "train-cached" else 1
        factor["feature projection"] = 2
    return {k: batch * v * factor[k] for k, v in parts.items()}


def peak_gflops(threads, size=2048, repeats=7):
    """The host's bf16 matrix-multiply rate now: median of `repeats` square products."""
    import torch
    torch.set_num_threads(threads)
    a = torch.randn(size, size).to(torch.bfloat16)
    b = torch.randn(size, size).to(torch.bfloat16)
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            start = time.perf_counter()
            torch.mm(a, b)
            if i >= 2:
                times.append(time.perf_counter() - start)
    times.sort()
    return 2 * size ** 3 / times[len(times) // 2] / 1e9


def report(model, batch, seconds, mode, gflops):
    parts = matrix_flops(model, batch, seconds, mode)
    total = sum(parts.values())
    lines = [f"{model} {mode}, batch {batch} x {seconds:g} s: matrix products per "
             f"{'forward' if mode == 'infer' else 'step'}"]
    for name, flops in parts.items():
        if flops:
            lines.append(f"  {name:28} {flops / 1e9:7.1f} GFLOP  {flops / gflops / 1e6:7.1f} ms")
    lines.append(f"  {'total':28} {total / 1e9:7.1f} GFLOP  {total / gflops / 1e6:7.1f} ms "
                 f"at {gflops:.0f} GFLOP/s (the floor)")
    return total / gflops / 1e6, "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="hubert-base", choices=sorted(DIMS))
    p.add_argument("--mode", default="all", choices=("all", "train", "train-cached", "infer"))
    p.add_argument("--batch-size", type=int, default=0, help="0: 4 for training, 1 for inference")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    gflops = peak_gflops(a.threads)
    print(f"bf16 GEMM rate (2048^3, {a.threads} threads, median): {gflops:.0f} GFLOP/s")
    for mode in (("train", "train-cached", "infer") if a.mode == "all" else (a.mode,)):
        batch = a.batch_size or (1 if mode == "infer" else 4)
        print(report(a.model, batch, a.seconds, mode, gflops)[1])


if __name__ == "__main__":
    main()
