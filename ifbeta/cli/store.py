"""ifbeta store verify | gc: check every artefact against its recorded sha256; remove what no load reads."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ifbeta.cli import common

HELP = "verify the artefact store (exit 1 on any problem) or gc: remove quarantined and unreachable files"


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["verify", "gc"],
                        help="verify: check every artefact (one line per problem); gc: remove the quarantine, "
                             "leftovers of killed writes and resume folders of finished teachers")
    parser.add_argument("--sampled", action="store_true",
                        help="verify: check large files by their sampled digest, as a load does (faster)")
    parser.add_argument("--yes", action="store_true", help="gc: remove without asking")


def garbage(store) -> list[Path]:
    """Everything ``gc`` removes: ``Store.garbage`` plus ``teachers.stale_resume_folders``."""
    from ifbeta.models.teachers import stale_resume_folders

    return store.garbage() + stale_resume_folders(store)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(args) -> int:
    store = common.store_of(args)
    if args.action == "verify":
        problems = store.verify(full=not args.sampled)
        for line in problems:
            print(line)
        print(f"{len(problems)} problem(s) in {store.root}" if problems else f"no problem found in {store.root}")
        return 1 if problems else 0
    found = garbage(store)
    if not found:
        print(f"nothing to remove in {store.root}")
        return 0
    total = sum(_size(p) for p in found)
    for path in found:
        print(f"{path.relative_to(store.root)}  ({_size(path) / 2**20:.1f} MB)")
    if not args.yes:
        try:
            answer = input(f"remove these {len(found)} item(s), {total / 2**20:.1f} MB? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed (pass --yes to remove without asking)", file=sys.stderr)
            return 1
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    print(f"removed {len(found)} item(s), {total / 2**20:.1f} MB")
    return 0
