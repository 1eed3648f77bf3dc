#!/usr/bin/python3
"""torchaudio 0.13 peer of hubert_bench: forward latency of a random-init hubert-base
(torchaudio.models.hubert_base) on 3 s clips: fp32, bf16 autocast, and the model cast with
model.bfloat16() (what a user serving at bf16 would run; the row next to ftune's served
bf16). Prints one JSON object:
{"threads": N, "results": {"fp32_b1": seconds | null, ..., "bf16served_b8": ...}, "errors": {...}}

usage: hubert_reference_bench.py --threads N --iters-b1 K --iters-b8 K
"""
import argparse
import copy
import json
import time

import torch
import torchaudio


def timed(fn, iters):
    fn()  # warm-up
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters-b1", type=int, default=3)
    p.add_argument("--iters-b8", type=int, default=1)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchaudio.models.hubert_base().eval()
    samples = int(16000 * args.seconds)
    results, errors = {}, {}
    for batch, iters in ((1, args.iters_b1), (8, args.iters_b8)):
        x = torch.randn(batch, samples)
        with torch.inference_mode():
            results[f"fp32_b{batch}"] = timed(lambda: model(x), iters)
            try:
                def bf16():
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        model(x)
                results[f"bf16_b{batch}"] = timed(bf16, iters)
            except Exception as e:  # torchaudio 0.13 is known to fail here
                results[f"bf16_b{batch}"] = None
                errors[f"bf16_b{batch}"] = str(e).splitlines()[0][:160]
    cast = copy.deepcopy(model).bfloat16()
    for batch, iters in ((1, args.iters_b1), (8, args.iters_b8)):
        x = torch.randn(batch, samples).bfloat16()
        with torch.inference_mode():
            results[f"bf16served_b{batch}"] = timed(lambda: cast(x), iters)
    print(json.dumps({"threads": torch.get_num_threads(), "results": results, "errors": errors}))


if __name__ == "__main__":
    main()
