"""The ``ifbeta`` command: one sub-command per module of ``ifbeta/cli`` (explicit dict ``COMMANDS``).

Bad input gives one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ifbeta import __version__
from ifbeta.cli import (
    bench,
    distill,
    export,
    extract,
    info,
    prune,
    score,
    select,
    store,
    teachers,
    train_teacher,
    transfer_check,
    validate_influence,
)
from ifbeta.errors import USER_ERRORS

COMMANDS = {
    "info": info,
    "train-teacher": train_teacher,
    "teachers": teachers,
    "extract": extract,
    "score": score,
    "validate-influence": validate_influence,
    "prune": prune,
    "select": select,
    "distill": distill,
    "bench": bench,
    "transfer-check": transfer_check,
    "export": export,
    "store": store,
}
"""Sub-command name -> module with ``HELP``, ``add_arguments(parser)`` and ``run(args) -> exit code``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ifbeta", description="Influence-guided, learnable data pruning "
                                     "for knowledge distillation.")
    parser.add_argument("--version", action="version", version=f"ifbeta {__version__}")
    parser.add_argument("--cache", default=None, help="artefact store folder (default: $IFBETA_CACHE or ./cache)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def _close_distributed() -> None:
    """Under torchrun: wait for every rank, then shut the process group down. Left open, a rank that
    exits while another still writes its files makes gloo abort ("terminate called without an active
    exception", exit -6), which torchrun reports as a failed run."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.barrier()
        distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from ifbeta.threads import limit_blas_threads

    limit_blas_threads()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        code = int(args.run(args) or 0)
        _close_distributed()
        return code
    except KeyboardInterrupt:
        print("ifbeta: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"ifbeta {args.command}: error: {message}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"ifbeta {args.command}: error: {message}", file=sys.stderr)
        return 2
