#!/usr/bin/python3
"""Eager-PyTorch peer of `ftworker bench`: torchaudio's HuBERT + a Hugging Face-style
classification head (projector -> mean pool -> classifier) + AdamW, fp32, the feature encoder
frozen, on identical work (same batch, clip length, accumulation, steps). Prints one JSON object
with samples_per_sec."""
import argparse
import json
import statistics
import time

import torch
import torchaudio


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
    a = p.parse_args()
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

    def step():
        opt.zero_grad()
        for audio, labels in batches:
            loss = torch.nn.functional.cross_entropy(model(audio), labels) / a.grad_accum
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
    print(json.dumps({"peer": "torchaudio eager fp32", "model": a.model,
                      "batch_size": a.batch_size, "seconds": a.seconds,
                      "grad_accum": a.grad_accum, "steps": a.steps,
                      "threads": torch.get_num_threads(),
                      "step_ms": 1000 * elapsed / a.steps,
                      "step_ms_median": 1000 * statistics.median(step_seconds),
                      "samples_per_sec": clips / elapsed}))


if __name__ == "__main__":
    main()
