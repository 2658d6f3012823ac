"""Speed benchmarks, measured side by side in one run (ratios; absolute seconds only as context).

- decode-and-cache time of the CIFAR-10 ImageFolder (60,000 JPEGs) into a fresh store;
- teacher feature extraction (``ifbeta.features.extract``) against a plain ``model(x)`` loop;
- KD training throughput (``ifbeta.train.fit``) against a minimal hand-written KD loop, same
  models, batch and steps;
- the whole IF-Beta overhead (extract + score + policy) as a fraction of one full-data KD epoch.

Usage: python benchmarks/speed.py [--out benchmarks/results/speed.md]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ifbeta import data, models, pipeline
from ifbeta.config import KDConfig
from ifbeta.features import extract
from ifbeta.runtime import limit_blas_threads
from ifbeta.store import Store
from ifbeta.train import TrainConfig, fit, kd_loss

DATASET = "imagefolder:../shared/data/cifar10"


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def plain_inference(model, normaliser, images, batch_size=512):
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            model(normaliser(images[start:start + batch_size]).contiguous(memory_format=torch.channels_last))


def minimal_kd_loop(student, teacher, normaliser, images, labels, batch_size, kd):
    optimiser = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    student.train()
    order = torch.randperm(len(images))
    for b in range(len(images) // batch_size):
        chunk = order[b * batch_size:(b + 1) * batch_size]
        x = normaliser(images[chunk]).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            t = teacher(x)
        loss = kd_loss(student(x), t.clone(), torch.from_numpy(labels[chunk.numpy()]), kd)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results/speed.md")
    parser.add_argument("--kd-samples", type=int, default=5120)
    parser.add_argument("--repeats", type=int, default=4, help="alternating (ours, hand-written) KD pairs")
    args = parser.parse_args()
    limit_blas_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        decode, _ = timed(lambda: (data.load(DATASET, "train", store=Store(tmp)), data.load(DATASET, "test", store=Store(tmp))))
    rows.append(("decode + cache CIFAR-10 (60,000 JPEGs), fresh store", f"{decode:.1f} s", ""))
    reuse, _ = timed(lambda: data.load(DATASET, "test"))
    rows.append(("load the cached test split (10,000) again", f"{reuse:.2f} s", ""))

    ws = pipeline.open_workspace(DATASET, pool=10_000)
    teacher, test = ws.teacher, ws.test
    model = teacher.model.to(memory_format=torch.channels_last).eval()
    ours, _ = timed(lambda: extract(teacher, test, batch_size=512, device=torch.device("cpu")))
    plain, _ = timed(lambda: plain_inference(model, teacher.normaliser, test.images))
    rows.append(("feature extraction, 10,000 test images (resnet20)", f"{ours:.1f} s vs plain {plain:.1f} s",
                 f"throughput ratio {plain / ours:.2f}"))

    kd, n = KDConfig(), args.kd_samples
    subset = np.arange(n)
    config = TrainConfig(epochs=1, batch_size=256, augment=False, seed=0)

    def product_run():
        torch.manual_seed(0)
        student = models.build("resnet8", num_classes=10)
        return timed(lambda: fit(student, ws.train, config=config, indices=subset, teacher=model, kd=kd,
                                 normaliser=teacher.normaliser, device=torch.device("cpu")))[0]

    def hand_run():
        torch.manual_seed(0)
        student = models.build("resnet8", num_classes=10).to(memory_format=torch.channels_last)
        return timed(lambda: minimal_kd_loop(student, model, teacher.normaliser, ws.train.images[:n],
                                             ws.train.labels[:n], 256, kd))[0]

    # one untimed warm-up of each (oneDNN primitives, allocator), then alternate which goes first
    product_run(), hand_run()
    pairs = []
    for repeat in range(args.repeats):
        first, second = (product_run, hand_run) if repeat % 2 == 0 else (hand_run, product_run)
        a, b = first(), second()
        pairs.append((a, b) if first is product_run else (b, a))
    ratios = sorted(hand / ours for ours, hand in pairs)
    product, hand = (float(np.median(column)) for column in zip(*pairs))
    rows.append((f"KD training, {n} images, resnet20 -> resnet8, batch 256, no augmentation "
                 f"(median of {args.repeats} alternating pairs after a warm-up)",
                 f"{product:.1f} s vs hand-written {hand:.1f} s",
                 f"throughput ratio {float(np.median(ratios)):.2f} (range {ratios[0]:.2f}-{ratios[-1]:.2f})"))
    torch.manual_seed(0)
    augmented, _ = timed(lambda: fit(models.build("resnet8", num_classes=10), ws.train,
                                     config=TrainConfig(epochs=1, batch_size=256, seed=0), indices=subset,
                                     teacher=model, kd=kd, normaliser=teacher.normaliser, device=torch.device("cpu")))
    rows.append(("  same with crop+flip augmentation", f"{augmented:.1f} s", f"{n / augmented:.0f} img/s"))

    epoch_50k = product * 50_000 / n
    result, _ = pipeline.scores(ws)
    learned = pipeline.policies(ws, [0.7])[0]
    policy_seconds = sum(step.get("seconds", 0.0) for step in learned.trace)
    extract_pool = ours * len(ws.train) / len(test)
    overhead = extract_pool + result.seconds.get("total", 0.0) + policy_seconds
    rows.append(("IF-Beta overhead on the 10k pool: extract + score + policy (r=0.7)",
                 f"{extract_pool:.0f} + {result.seconds.get('total', 0):.0f} + {policy_seconds:.0f} s",
                 f"{overhead / epoch_50k:.2f} full-data (50k) KD epochs"))
    lines = ["# Speed (side by side in one run)", "",
             f"{platform.machine()}, {torch.get_num_threads()} torch threads, BLAS single-threaded, torch {torch.__version__}.",
             "Score and policy seconds are those recorded when the artefacts were computed (cached here).", "",
             "| what | seconds | ratio |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows] + [""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
