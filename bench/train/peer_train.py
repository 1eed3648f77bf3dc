#!/usr/bin/python3
"""Eager-PyTorch peer of `ftworker bench`: torchaudio's HuBERT + a Hugging Face-style
classification head (projector -> mean pool -> classifier) + AdamW, the feature encoder frozen,
on identical work (same batch, clip length, accumulation, steps), in fp32 or in bf16 autocast as
Hugging Face Trainer's `bf16=True` runs it. Prints one JSON object with samples_per_sec."""
import argparse
import contextlib
import json
import statistics
import time

import torch
import torchaudio


def upcast_norms_under_autocast():
    """torch 1.13's CPU autocast runs layer_norm and group_norm in bf16, which later versions
    (and what a user of them gets) run in fp32: upcast their inputs, as those versions do."""
    F = torch.nn.functional
    if getattr(F, "_ftune_norms_upcast", False):
        return
    layer_norm, group_norm = F.layer_norm, F.group_norm

    def f32(t):
        return t.float() if t is not None and t.dtype == torch.bfloat16 else t

    def upcast_layer_norm(x, shape, weight=None, bias=None, eps=1e-5):
        if torch.is_autocast_cpu_enabled():
            with torch.autocast("cpu", enabled=False):
                return layer_norm(f32(x), shape, f32(weight), f32(bias), eps)
        return layer_norm(x, shape, weight, bias, eps)

    def upcast_group_norm(x, groups, weight=None, bias=None, eps=1e-5):
        if torch.is_autocast_cpu_enabled():
            with torch.autocast("cpu", enabled=False):
                return group_norm(f32(x), groups, f32(weight), f32(bias), eps)
        return group_norm(x, groups, weight, bias, eps)

    F.layer_norm, F.group_norm = upcast_layer_norm, upcast_group_norm
    F._ftune_norms_upcast = True


class Classifier(torch.nn.Module):
    def __init__(self, backbone, hidden, num_labels, proj=256):
        super().__init__()
        self.backbone = backbone
        self.projector = torch.nn.Linear(hidden, proj)
        self.classifier = torch.nn.Linear(proj, num_labels)

    def forward(self, audio):
        hidden, _ = self.backbone(audio)
        return self.classifier(self.projector(hidden).mean(dim=1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="hubert-base", choices=["hubert-base", "hubert-large"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--labels", type=int, default=8)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = p.parse_args()
    if a.precision == "bf16" and torch.__version__ < "2":
        upcast_norms_under_autocast()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.model == "hubert-base":
        backbone, hidden = torchaudio.models.hubert_base(), 768
    else:
        backbone, hidden = torchaudio.models.hubert_large(), 1024
    model = Classifier(backbone, hidden, a.labels)
    model.backbone.feature_extractor.requires_grad_(False)  # HF freeze_feature_encoder()
    model.train()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    samples = int(a.seconds * 16000)
    batches = [(torch.randn(a.batch_size, samples), torch.randint(a.labels, (a.batch_size,)))
               for _ in range(a.grad_accum)]

    def autocast():
        if a.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        opt.zero_grad()
        for audio, labels in batches:
            with autocast():
                logits = model(audio)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels) / a.grad_accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    start = time.perf_counter()
    step_seconds = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        step_seconds.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    clips = a.steps * a.batch_size * a.grad_accum
    print(json.dumps({"peer": f"torchaudio eager {a.precision}", "model": a.model,
                      "batch_size": a.batch_size, "seconds": a.seconds,
                      "grad_accum": a.grad_accum, "steps": a.steps,
                      "threads": torch.get_num_threads(),
                      "step_ms": 1000 * elapsed / a.steps,
                      "step_ms_median": 1000 * statistics.median(step_seconds),
                      "samples_per_sec": clips / elapsed}))


if __name__ == "__main__":
    main()
