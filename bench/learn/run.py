#!/usr/bin/python3
"""Learning parity: ftune against an eager-PyTorch reference of the same architecture, recipe,
initial weights and split, over several seeds, on the 8-emotion demo corpus. A benchmark, not
a test: it prints per-epoch train loss and eval accuracy as mean ± sd for each side, side by
side, and one summary line.

  bench/learn/run.py --seeds 1 2 3 --epochs 10          # corpus made on first use

Each seed: `ftworker train --model tiny --seed S` trains on the manifest (fixed speaker split);
`ftworker init-model` writes the weights that run starts from, and bench/learn/reference_train.py
trains them with torchaudio's HuBERT and a plain PyTorch loop, with the same recipe, on the same
batches (ftune's clip order for that seed). Dropout masks differ between the two, so runs agree in distribution, not
step for step.
"""
import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
EMOTIONS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def make_corpus(folder, actors, eval_actors):
    """The demo corpus (all 8 emotions) and a manifest holding out `eval_actors`."""
    if not os.path.isdir(folder) or len([d for d in os.listdir(folder) if d.startswith("Actor_")]) < actors:
        subprocess.run([os.path.join(ROOT, "scripts", "make-demo-dataset"), folder, "--actors", str(actors)],
                       check=True, stdout=subprocess.DEVNULL)
    manifest = os.path.join(folder, "manifest.csv")
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "speaker", "split"])
        for actor in range(1, actors + 1):
            speaker = f"Actor_{actor:02d}"
            for name in sorted(os.listdir(os.path.join(folder, speaker))):
                emotion = EMOTIONS[int(name.split("-")[2]) - 1]
                w.writerow([f"{speaker}/{name}", emotion, speaker,
                            "eval" if actor in eval_actors else "train"])
    return manifest


def ftune_run(a, manifest, seed, out):
    """Per-epoch {train_loss, eval_accuracy, eval_loss} of `ftworker train` (the preset with this
    seed starts from the weights `ftworker init-model` writes for it)."""
    shutil.rmtree(out, ignore_errors=True)  # a folder with checkpoints would resume
    cmd = [a.ftworker, "train", "--dataset", manifest, "--model", a.model, "--labels", ",".join(EMOTIONS),
           "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
           "--learning-rate", str(a.learning_rate), "--warmup-ratio", str(a.warmup_ratio),
           "--seed", str(seed), "--precision", a.precision, "--threads", str(a.threads),
           "--log-every-steps", "1", "--keep-last", "1", "--output-dir", out, "--json"]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    losses, epochs = {}, []
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        if "train_progress" in event:
            p = event["train_progress"]
            losses.setdefault(p["epoch"], []).append(p["loss"])
        elif "eval_result" in event:
            r = event["eval_result"]
            epochs.append({"train_loss": statistics.mean(losses[r["epoch"]]),
                           "eval_accuracy": r.get("accuracy", 0.0), "eval_loss": r["loss"]})
    return epochs


def reference_run(a, manifest, init, seed):
    cmd = ["/usr/bin/python3", os.path.join(HERE, "reference_train.py"), "--manifest", manifest,
           "--init", init, "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
           "--learning-rate", str(a.learning_rate), "--warmup-ratio", str(a.warmup_ratio),
           "--seed", str(seed), "--threads", str(a.threads)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return [e for e in map(json.loads, proc.stdout.splitlines()) if "epoch" in e]


def mean_sd(values):
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ftworker", default=os.path.join(ROOT, "build", "bin", "ftworker"))
    p.add_argument("--work", default="/tmp/ftune-learn", help="corpus and runs")
    p.add_argument("--actors", type=int, default=12)
    p.add_argument("--eval-actors", type=int, nargs="+", default=[11, 12])
    p.add_argument("--model", default="tiny")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--precision", default="auto", help="ftune's precision; the reference runs fp32")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()

    manifest = make_corpus(os.path.join(a.work, f"demo{a.actors}"), a.actors, set(a.eval_actors))
    runs = {"ftune": [], "reference": []}
    seconds = {"ftune": 0.0, "reference": 0.0}
    for seed in a.seeds:
        # Written afresh every time: a folder left by an earlier build would start the reference
        # from another initialisation than ftune's preset.
        init = os.path.join(a.work, f"init-{a.model}-{seed}")
        shutil.rmtree(init, ignore_errors=True)
        subprocess.run([a.ftworker, "init-model", "--model", a.model, "--labels", ",".join(EMOTIONS),
                        "--seed", str(seed), "--output-dir", init], check=True, stdout=subprocess.DEVNULL)
        start = time.perf_counter()
        runs["ftune"].append(ftune_run(a, manifest, seed, os.path.join(a.work, f"run-{seed}")))
        seconds["ftune"] += time.perf_counter() - start
        start = time.perf_counter()
        runs["reference"].append(reference_run(a, manifest, init, seed))
        seconds["reference"] += time.perf_counter() - start
        for side in runs:
            last = runs[side][-1][-1]
            print(f"seed {seed} {side:9}: train loss {last['train_loss']:.3f}, "
                  f"eval accuracy {last['eval_accuracy']:.3f}", file=sys.stderr, flush=True)

    print(f"{a.model} from its preset initialisation, {len(a.seeds)} seeds {a.seeds}, "
          f"{a.epochs} epochs, batch {a.batch_size}, lr {a.learning_rate}, warmup {a.warmup_ratio}; "
          f"ftune {a.precision}, reference fp32; chance {1 / len(EMOTIONS):.3f}")
    print(f"{'epoch':>5}  {'train loss: ftune':>18}  {'reference':>15}  {'eval acc: ftune':>16}  {'reference':>15}")
    for e in range(a.epochs):
        col = {side: [r[e] for r in runs[side]] for side in runs}
        print(f"{e + 1:>5}  {mean_sd([x['train_loss'] for x in col['ftune']]):>18}  "
              f"{mean_sd([x['train_loss'] for x in col['reference']]):>15}  "
              f"{mean_sd([x['eval_accuracy'] for x in col['ftune']]):>16}  "
              f"{mean_sd([x['eval_accuracy'] for x in col['reference']]):>15}")
    final = {side: [r[-1]["eval_accuracy"] for r in runs[side]] for side in runs}
    stalled = {side: sum(r[-1]["train_loss"] > 0.95 * math.log(len(EMOTIONS)) for r in runs[side])
               for side in runs}
    print(f"summary: final eval accuracy ftune {mean_sd(final['ftune'])} vs reference "
          f"{mean_sd(final['reference'])} (difference {statistics.mean(final['ftune']) - statistics.mean(final['reference']):+.3f}); "
          f"stalled runs ftune {stalled['ftune']}/{len(a.seeds)}, reference {stalled['reference']}/{len(a.seeds)}; "
          f"wall time ftune {seconds['ftune']:.0f} s, reference {seconds['reference']:.0f} s")


if __name__ == "__main__":
    main()
