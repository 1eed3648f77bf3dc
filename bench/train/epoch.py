#!/usr/bin/python3
"""Whole epochs on a real, variable-length corpus: the RAVDESS-shaped demo corpus (24 actors,
1440 clips of 1.5-5 s, two actors held out for evaluation), hubert-base fine-tuned from a
checkpoint folder (frozen feature encoder, batch 4, the fine-tune recipe), ftune against the
eager-PyTorch bf16 peer (bench/learn/reference_train.py --precision bf16: torchaudio's HuBERT,
autocast as Hugging Face Trainer's bf16=True, the same batches), each with group_by_length off
and on. ftune's epoch 1 computes the frozen encoder's output, epochs 2+ reuse it; the peer's
epochs are all alike. Prints seconds per epoch (training, then evaluation), the ratios, and what
3 epochs take. A benchmark, not a test.

  bench/train/epoch.py --work /tmp/ftune-epoch            # corpus made on first use
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench", "learn"))
from run import EMOTIONS, make_corpus  # noqa: E402


def ftune_epochs(a, manifest, init, group, out):
    """[(train seconds, eval seconds)] per epoch of `ftworker train`, and its wall seconds. An
    epoch's training time is its steps' own pace (first to last step, scaled to all steps), so
    the evaluation and checkpoint between epochs are not counted in it."""
    cmd = [a.ftworker, "train", "--dataset", manifest, "--model", init, "--labels", ",".join(EMOTIONS),
           "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--threads", str(a.threads),
           "--log-every-steps", "1", "--keep-last", "1", "--output-dir", out, "--json"]
    if group:
        cmd.append("--group-by-length")
    subprocess.run(["rm", "-rf", out], check=True)
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    steps, evals, wall = {}, {}, 0.0
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        if "train_progress" in event:
            p = event["train_progress"]
            steps.setdefault(p["epoch"], []).append(p["elapsed_seconds"])
        elif "eval_result" in event:
            evals[event["eval_result"]["epoch"]] = event["eval_result"]["seconds"]
        elif "state" in event:
            wall = event["seconds"]
    epochs = []
    for e in sorted(steps):
        t = steps[e]
        # Epoch 1's first step has no earlier step to time it from: count it from the start.
        start = 0.0 if e == 1 else t[0] - (t[-1] - t[0]) / max(1, len(t) - 1)
        epochs.append((t[-1] - start, evals.get(e, 0.0)))
    return epochs, wall


def peer_epoch(a, manifest, init, group):
    cmd = ["/usr/bin/python3", os.path.join(ROOT, "bench", "learn", "reference_train.py"),
           "--manifest", manifest, "--init", init, "--epochs", "1", "--batch-size", str(a.batch_size),
           "--learning-rate", "5e-5", "--warmup-ratio", "0", "--freeze-feature-encoder",
           "--precision", "bf16", "--threads", str(a.threads)]
    if group:
        cmd.append("--group-by-length")
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    first = next(json.loads(l) for l in proc.stdout.splitlines() if '"epoch"' in l)
    return first["train_seconds"], first["eval_seconds"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ftworker", default=os.path.join(ROOT, "build", "bin", "ftworker"))
    p.add_argument("--work", default="/tmp/ftune-epoch")
    p.add_argument("--actors", type=int, default=24)
    p.add_argument("--model", default="hubert-base")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2, help="ftune epochs timed (2: epoch 1 and one of 2+)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--group-by-length", choices=("off", "on", "both"), default="both")
    a = p.parse_args()

    manifest = make_corpus(os.path.join(a.work, f"demo{a.actors}"), a.actors, {a.actors - 1, a.actors})
    # A checkpoint folder (random weights): the fine-tune recipe with its frozen encoder.
    init = os.path.join(a.work, f"init-{a.model}")
    subprocess.run(["rm", "-rf", init], check=True)
    subprocess.run([a.ftworker, "init-model", "--model", a.model, "--labels", ",".join(EMOTIONS),
                    "--seed", "1", "--output-dir", init], check=True, stdout=subprocess.DEVNULL)
    print(f"{a.model}, demo corpus of {a.actors} actors (actors {a.actors - 1} and {a.actors} "
          f"held out), batch {a.batch_size}, {a.threads} threads, bf16; seconds per epoch "
          "(training + evaluation)", flush=True)
    groups = {"off": (False,), "on": (True,), "both": (False, True)}[a.group_by_length]
    for group in groups:
        name = "group_by_length on" if group else "group_by_length off"
        epochs, wall = ftune_epochs(a, manifest, init, group, os.path.join(a.work, "ftune-run"))
        e1 = epochs[0]
        later = epochs[1] if len(epochs) > 1 else None
        line = f"{name:>20}: ftune epoch 1 {e1[0]:.0f} + {e1[1]:.0f}"
        if later:
            line += f", epoch 2 {later[0]:.0f} + {later[1]:.0f}"
        print(line, flush=True)
        peer = peer_epoch(a, manifest, init, group) if a.peer else None
        if peer:
            line = (f"{'':>20}  peer {peer[0]:.0f} + {peer[1]:.0f} (every epoch); ftune/peer "
                    f"speed {peer[0] / e1[0]:.2f}x epoch 1")
            if later:
                line += f", {peer[0] / later[0]:.2f}x epochs 2+"
            print(line, flush=True)
        if later:
            # The time between the ftune run's epochs beyond training and evaluation: loading
            # the data and model, saving checkpoints; a third epoch adds one more of each.
            other = max(0.0, wall - sum(t + e for t, e in epochs))
            three = wall + later[0] + later[1] + other / len(epochs)
            line = f"{'':>20}  3 epochs: ftune {three / 60:.1f} min"
            if peer:
                line += f", peer {3 * (peer[0] + peer[1]) / 60:.1f} min (training and evaluation)"
            print(line, flush=True)

if __name__ == "__main__":
    main()
