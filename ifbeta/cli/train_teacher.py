"""ifbeta train-teacher: train a zoo architecture on a dataset and write a safetensors checkpoint."""
from __future__ import annotations

from pathlib import Path

from ifbeta.cli import common

HELP = "train a teacher (resumable: rerun the same command after a kill)"


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    parser.add_argument("--arch", default=None, help="zoo architecture (default: the dataset's default teacher)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default per dataset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output .safetensors (default: the store's auto-teacher slot)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args) -> int:
    from ifbeta.models import zoo as models
    from ifbeta.models.teachers import auto_teacher_path, train_teacher

    train, test = common.load_splits(args)
    arch = args.arch or models.default_architectures(train.name, train.image_size)[0]
    models.build(arch, num_classes=train.num_classes, in_channels=train.channels)  # validates the name early
    out = Path(args.out) if args.out else auto_teacher_path(train, arch, store=common.store_of(args),
                                                            epochs=args.epochs, seed=args.seed)
    if out.suffix != ".safetensors":
        out = out.with_suffix(".safetensors")
    bar = common.ProgressBar(f"train {arch}")
    result = train_teacher(train, arch, out, epochs=args.epochs, seed=args.seed, test=test, on_step=bar)
    bar.close()
    summary = {"checkpoint": str(out), "arch": arch, "dataset": train.name, "test_top1": result.test_top1,
               "test_top5": result.test_top5, "epochs": len(result.history), "seconds": result.seconds,
               "resumed_from_epoch": result.resumed_from}
    print(f"teacher {arch} on {train.name}: test top-1 {result.test_top1:.4f}, top-5 {result.test_top5:.4f} "
          f"in {result.seconds:.0f}s -> {out}")
    if args.json:
        common.print_json(summary)
    return 0
