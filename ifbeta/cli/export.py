"""ifbeta export: write a subset as an ImageFolder tree that loads back with --dataset imagefolder:<out>."""
from __future__ import annotations

from pathlib import Path

from ifbeta.cli import common

HELP = ("export a subset as an ImageFolder tree: the kept samples in <out>/train/<class>/, the whole test split "
        "in <out>/test/<class>/, the subset file and classes.json beside them; it loads back with "
        "--dataset imagefolder:<out>")


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    parser.add_argument("--subset", required=True, help="subset directory (holding manifest.json)")
    parser.add_argument("--format", default="imagefolder", choices=["imagefolder"], help="export format")
    parser.add_argument("--out", required=True, help="destination folder (new or empty, unless --force)")
    parser.add_argument("--mode", default="copy", choices=["copy", "symlink", "hardlink"],
                        help="for imagefolder:<path> datasets: copy, symlink or hardlink the original files "
                             "(datasets without files always get PNGs)")
    parser.add_argument("--force", action="store_true",
                        help="export into a non-empty folder, replacing the train/, test/ (and pruned/) folders and "
                             "the subset files there")
    parser.add_argument("--include-pruned", action="store_true",
                        help="also write the pruned samples under pruned/ (which imagefolder:<out> ignores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args) -> int:
    from ifbeta.subsets import export
    from ifbeta.subsets import files as subset

    train, test = common.load_splits(args)
    loaded = subset.load(Path(args.subset), train)
    destination = export.export_imagefolder(loaded, train.images, train, Path(args.out), test=test, mode=args.mode,
                                            include_pruned=args.include_pruned, force=args.force)
    files = "PNG files" if not str(train.name).startswith("imagefolder:") else f"files ({args.mode})"
    pruned = (len(train) - loaded.k) if args.include_pruned else 0
    written = loaded.k + pruned + len(test)
    print(f"exported {written} {files} ({loaded.k} kept of {len(train)} in train/, {len(test)} in test/"
          f"{f', {pruned} in pruned/' if pruned else ''}) -> {destination}; "
          f"load it with --dataset imagefolder:{destination}")
    if args.json:
        common.print_json({"out": str(destination), "k": loaded.k, "n": len(train), "test": len(test),
                           "written": written, "mode": args.mode, "format": args.format,
                           "dataset": f"imagefolder:{destination}"})
    return 0
