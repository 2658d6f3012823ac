"""Progress events as text: turn an ``on_step(step, info)`` event into (fraction done, one line).

The engine's steps report progress as plain dicts (training batches and epochs, feature batches,
bilevel outer steps, ``done``/``total`` counters, cross-fitting folds, runs of a transfer check,
``notice`` events with a ``text`` line);
``describe`` is the one place that reads them, for any face that draws a bar.
"""
from __future__ import annotations

from collections.abc import Callable

OnStep = Callable[[int, dict], None]
"""The progress callback every long step takes: ``on_step(step, info)``; ``info`` is a plain dict."""


def describe(step: int, info: dict, *, total: int | None = None, epochs: int | None = None
             ) -> tuple[float | None, str]:
    """(fraction in [0, 1] or None when unknown, text) for one event; ``total`` = expected outer steps,
    ``epochs`` = expected training epochs (either may come from the event itself)."""
    fraction, text = _describe_event(step, info, total=total, epochs=epochs)
    if "runs" in info and "run" in info:  # one of several student runs (transfer check)
        runs, run = max(int(info["runs"]), 1), int(info["run"])
        within = fraction if info.get("event") in ("batch", "epoch") and fraction is not None else 0.0
        fraction = (run + (1.0 if info.get("event") == "run-finished" else within)) / runs
        text = f"run {run + 1}/{runs} ({info.get('label', '')}, seed {info.get('seed', '')}): {text}"
    return fraction, text


def _describe_event(step: int, info: dict, *, total: int | None, epochs: int | None) -> tuple[float | None, str]:
    event, stage = info.get("event"), info.get("stage")
    if event == "notice":  # one line saying what is about to happen (e.g. a teacher is trained)
        return None, str(info.get("text", ""))
    if event == "batch" and "epoch" in info:  # training batch
        epochs = epochs or info.get("epochs")
        within = (info.get("batch", 0) + 1) / max(info.get("batches", 1), 1)
        fraction = (info["epoch"] + within) / epochs if epochs else within
        return fraction, (f"epoch {info['epoch'] + 1}/{epochs or '?'}, batch {info.get('batch', 0) + 1}/"
                          f"{info.get('batches', '?')}, loss {info.get('loss', float('nan')):.3f}")
    if event == "epoch":
        epochs = info.get("epochs") or epochs
        accuracy = f", test top-1 {info['test_top1']:.3f}" if info.get("test_top1") is not None else ""
        return (info["epoch"] / epochs if epochs else None), f"epoch {info['epoch']}/{epochs}{accuracy}"
    if event == "batch":  # feature extraction
        batches = info.get("batches")
        return info["batch"] / max(batches or 1, 1), f"teacher features, batch {info['batch']}/{batches}"
    if "alpha" in info and "beta" in info:  # bilevel outer step
        fraction = (step + 1) / total if total else None
        return fraction, (f"r={info.get('ratio', '?')}, step {step + 1}: alpha={info['alpha']:.3g}, "
                          f"beta={info['beta']:.3g}, J={info.get('J', float('nan')):.5g}")
    if "done" in info and "total" in info:
        return info["done"] / max(info["total"], 1), f"{stage or 'step'} {info['done']}/{info['total']}"
    if stage == "fit":  # one Newton step of a fold's proxy fit
        return (info["fold"] / max(info.get("folds", 1), 1), f"fold {info['fold'] + 1}/{info.get('folds')}: proxy fit, "
                f"Newton step {info['iteration']}, ||grad|| {info['grad_norm']:.3g} (stops at {info['target']:.3g})")
    if stage == "fold":
        return (info["fold"] + 1) / max(info.get("folds", 1), 1), f"fold {info['fold'] + 1}/{info.get('folds')}"
    return None, str(stage or event or step)
