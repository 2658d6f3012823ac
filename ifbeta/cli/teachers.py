"""ifbeta teachers: the teachers the store (and the bundle) holds for a dataset, and which is the default."""
from __future__ import annotations

from ifbeta.cli import common

HELP = "list a dataset's teachers (path, arch, epochs, test accuracy, default) or change the default"


def add_arguments(parser) -> None:
    common.add_dataset(parser)
    parser.add_argument("--arch", default=None, help="only this architecture")
    parser.add_argument("--set-default", default=None, metavar="PATH_OR_NAME",
                        help="make this teacher (its name as listed, or its file) the default of its architecture")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args) -> int:
    from ifbeta.errors import UserError
    from ifbeta.models import registry
    from ifbeta.models.teachers import BUNDLED, listing

    train, _ = common.load_splits(args)
    store = common.store_of(args)
    if args.set_default:
        entry = registry.find(store, args.set_default, fingerprint=train.fingerprint, bundled=BUNDLED)
        if entry is None:
            raise UserError(f"no teacher of {train.name} is named {args.set_default!r}; "
                            f"'ifbeta teachers --dataset {args.dataset}' lists them")
        registry.set_default(store, entry)
        print(f"default {entry.arch} teacher for {train.name}: {entry.name}")
    found = listing(train, store=store, arch=args.arch)
    if not found:
        print(f"no teacher for {train.name} yet: 'ifbeta train-teacher --dataset {args.dataset}' trains one")
    for entry in found:
        accuracy = "n/a" if entry.test_top1 is None else f"{entry.test_top1:.4f}"
        print(f"{'*' if entry.default else ' '} {entry.name:<24} {entry.arch:<12} epochs {entry.epochs!s:<4} "
              f"test top-1 {accuracy:<7} {entry.source:<10} {entry.path}")
    if found:
        print("* = default (what --teacher auto uses)")
    if args.json:
        common.print_json({"dataset": train.name, "teachers": [e.describe() for e in found]})
    return 0
