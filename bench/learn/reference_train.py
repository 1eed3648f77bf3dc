#!/usr/bin/python3
"""The eager-PyTorch reference of an ftune training run: torchaudio's HuBERT with transformers'
classification head, started from the same weights (an HF folder from `ftworker init-model`),
trained with the plain loop a user would write (AdamW with transformers' weight-decay groups,
linear warmup then linear decay, gradient clipping, per-clip normalisation, padded batches
with their lengths), on the manifest's train split, evaluated on its eval split after every
epoch. Prints one JSON object per epoch (with its training and evaluation seconds), then a
summary object. With --precision bf16 it trains under bf16 autocast as Hugging Face Trainer's
bf16=True does (layer_norm and group_norm upcast, as torch 1.13 lacks); bench/train/epoch.py
times it that way against ftune on a real corpus.

  reference_train.py --manifest M.csv --init DIR --epochs 8 --batch-size 8 \\
      --learning-rate 1e-3 --warmup-ratio 0.1 --seed 1
"""
import argparse
import csv
import json
import math
import os
import sys
import time
import wave

import numpy
import torch

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(_ROOT, "tests", "support"))
sys.path.insert(0, os.path.join(_ROOT, "bench", "train"))
from torchaudio_hubert import classify, load_hf_folder, named_parameters  # noqa: E402
from peer_train import upcast_norms_under_autocast  # noqa: E402

MEGABATCH_BATCHES = 50  # worker/data/batch_loader.cc, as Hugging Face's group_by_length


def read_wav(path):
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getframerate() != 16000:
            raise ValueError(f"{path}: the reference reads 16-bit 16 kHz WAV only")
        frames = numpy.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(numpy.float32)
        frames = frames.reshape(-1, w.getnchannels()).mean(axis=1) / 32768.0
    x = torch.from_numpy(frames.astype(numpy.float64))
    # Wav2Vec2FeatureExtractor's normalisation: zero mean, unit variance per clip.
    return ((x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)).float()


def read_manifest(path, labels):
    base = os.path.dirname(os.path.abspath(path))
    split = {"train": [], "eval": []}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            which = "train" if row["split"] == "train" else "eval"
            split[which].append((read_wav(os.path.join(base, row["path"])), labels.index(row["label"])))
    return split


_MASK64 = (1 << 64) - 1


def _mix64(x):
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def ftune_order(n, seed, epoch):
    """The clip order of ftune's training epoch (worker/data/batch_loader.cc PlanEpoch without
    group_by_length: a Fisher-Yates shuffle drawn from SplitMix64 seeded by (seed, epoch))."""
    state = _mix64(_mix64(_mix64(_mix64(seed) ^ 0x53485546) ^ epoch) ^ 0)
    order = list(range(n))
    for i in range(n, 1, -1):
        limit = _MASK64 - _MASK64 % i
        while True:
            x = _mix64(state)
            state = (state + 1) & _MASK64
            if x < limit:
                break
        j = x % i
        order[i - 1], order[j] = order[j], order[i - 1]
    return order


def group_by_length(clips, batch_size, order):
    """ftune's (and Hugging Face's) group_by_length: the shuffled order cut into megabatches of
    50 batches, each sorted longest first (stable)."""
    mega = batch_size * MEGABATCH_BATCHES
    grouped = []
    for start in range(0, len(order), mega):
        grouped += sorted(order[start:start + mega], key=lambda i: -len(clips[i][0]))
    return grouped


def batches(clips, batch_size, order):
    for start in range(0, len(order), batch_size):
        members = [clips[i] for i in order[start:start + batch_size]]
        lengths = torch.tensor([len(w) for w, _ in members])
        audio = torch.zeros(len(members), int(lengths.max()))
        for row, (w, _) in enumerate(members):
            audio[row, : len(w)] = w
        yield audio, lengths, torch.tensor([label for _, label in members])


def lr_factor(step, warmup, total, schedule):
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    decay = max(1, total - warmup)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1 + math.cos(math.pi * (step - warmup) / decay)))
    return max(0.0, (total - step) / decay)


def evaluate(model, head, clips, batch_size, autocast):
    model.eval()
    head.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for audio, lengths, labels in batches(clips, batch_size, list(range(len(clips)))):
            with autocast():
                logits = classify(model, head, audio, lengths).float()
            loss += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
    model.train()
    head.train()
    return loss / len(clips), correct / len(clips)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--manifest", required=True)
    p.add_argument("--init", required=True, help="HF folder with the initial weights")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--schedule", default="linear", choices=["linear", "cosine", "constant"])
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--freeze-feature-encoder", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--order", default="ftune", choices=["ftune", "torch"],
                   help="clip order per epoch: ftune's (the same batches as an ftune run with this "
                        "seed) or torch.randperm's")
    p.add_argument("--group-by-length", action="store_true")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.precision == "bf16":
        upcast_norms_under_autocast()

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16")

    model, head, config = load_hf_folder(a.init)
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    data = read_manifest(a.manifest, labels)
    if a.freeze_feature_encoder:
        model.feature_extractor.requires_grad_(False)
    params = {n: q for n, q in named_parameters(model, head).items() if q.requires_grad}
    norms = {id(q) for m in list(model.modules()) + list(head.modules())
             if isinstance(m, torch.nn.LayerNorm) for q in m.parameters(recurse=False)}
    no_decay = [q for n, q in params.items() if n.endswith("bias") or id(q) in norms]
    decay = [q for n, q in params.items() if not (n.endswith("bias") or id(q) in norms)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    steps_per_epoch = math.ceil(len(data["train"]) / a.batch_size)
    total = steps_per_epoch * a.epochs
    warmup = math.ceil(total * a.warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total, a.schedule))
    shuffle = torch.Generator().manual_seed(a.seed)
    model.train()
    head.train()
    start = time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        losses, correct = [], 0
        if a.order == "ftune":
            order = ftune_order(len(data["train"]), a.seed, epoch - 1)
        else:
            order = torch.randperm(len(data["train"]), generator=shuffle).tolist()
        if a.group_by_length:
            order = group_by_length(data["train"], a.batch_size, order)
        epoch_start = time.perf_counter()
        for audio, lengths, labels_batch in batches(data["train"], a.batch_size, order):
            opt.zero_grad()
            with autocast():
                logits = classify(model, head, audio, lengths).float()
            loss = torch.nn.functional.cross_entropy(logits, labels_batch)
            loss.backward()
            if a.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(list(params.values()), a.max_grad_norm)
            opt.step()
            sched.step()
            losses.append(loss.item())
            correct += (logits.argmax(1) == labels_batch).sum().item()
        train_seconds = time.perf_counter() - epoch_start
        eval_start = time.perf_counter()
        eval_loss, eval_accuracy = evaluate(model, head, data["eval"], a.batch_size, autocast)
        print(json.dumps({"epoch": epoch, "train_loss": sum(losses) / len(losses),
                          "train_accuracy": correct / len(data["train"]),
                          "eval_loss": eval_loss, "eval_accuracy": eval_accuracy,
                          "train_seconds": train_seconds,
                          "eval_seconds": time.perf_counter() - eval_start}), flush=True)
    print(json.dumps({"summary": True, "seconds": time.perf_counter() - start,
                      "train_clips": len(data["train"]), "eval_clips": len(data["eval"])}))


if __name__ == "__main__":
    main()
