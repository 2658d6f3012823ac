"""ifbeta train-teacher: train a zoo architecture on a dataset, write a safetensors checkpoint and make it
the dataset's default teacher (the one ``--teacher auto`` uses) unless ``--no-default``."""
from __future__ import annotations

import shutil
from pathlib import Path

from ifbeta.cli import common

HELP = "train a teacher and make it the default (resumable: rerun the same command after a kill)"


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    parser.add_argument("--arch", default=None, help="zoo architecture (default: the dataset's default teacher)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default per dataset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output .safetensors (default: the store's slot for these settings)")
    parser.add_argument("--no-default", action="store_true",
                        help="keep the current default teacher (the new one is listed by 'ifbeta teachers')")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args) -> int:
    from ifbeta.models import registry
    from ifbeta.models import zoo as models
    from ifbeta.models.teachers import (
        BUNDLED,
        default_teacher,
        stale_resume_folders,
        teacher_config,
        teacher_slot,
        train_teacher,
    )

    if args.epochs is not None and args.epochs < 1:
        from ifbeta.errors import UserError

        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    train, test = common.load_splits(args)
    store = common.store_of(args)
    arch = args.arch or models.default_architectures(train.name, train.image_size)[0]
    models.build(arch, num_classes=train.num_classes, in_channels=train.channels)  # validates the name early
    out = Path(args.out) if args.out else teacher_slot(train, arch, store=store, epochs=args.epochs, seed=args.seed)
    if out.suffix != ".safetensors":
        out = out.with_suffix(".safetensors")
    settings = teacher_config(train, arch, args.epochs, args.seed).to_dict()
    extra = (registry.header(out) or {}).get("extra") or {}
    if extra.get("fingerprint") == train.fingerprint and extra.get("train") == settings:
        summary = {"test_top1": extra.get("test_top1"), "test_top5": extra.get("test_top5"),
                   "epochs": settings["epochs"], "seconds": 0.0, "resumed_from_epoch": settings["epochs"]}
        print(f"teacher {arch} on {train.name} with these settings is already trained: {out}")
    else:
        bar = common.ProgressBar(f"train {arch}")
        result = train_teacher(train, arch, out, epochs=args.epochs, seed=args.seed, test=test, on_step=bar)
        bar.close()
        summary = {"test_top1": result.test_top1, "test_top5": result.test_top5, "epochs": len(result.history),
                   "seconds": result.seconds, "resumed_from_epoch": result.resumed_from}
        print(f"teacher {arch} on {train.name}: test top-1 {result.test_top1:.4f}, top-5 {result.test_top5:.4f} "
              f"in {result.seconds:.0f}s -> {out}")
    entry = registry.register(store, out, make_default=not args.no_default, bundled=BUNDLED)
    for stale in stale_resume_folders(store):  # resume state of trainings that finished (earlier versions kept it)
        shutil.rmtree(stale, ignore_errors=True)
    current = default_teacher(train, arch, store=store)
    print(f"default {arch} teacher for {train.name}: {current.name}{' (this one)' if current.path == entry.path else ''}")
    if args.json:
        common.print_json({"checkpoint": str(out), "arch": arch, "dataset": train.name, "name": entry.name,
                           "default": current.path == entry.path, **summary})
    return 0
