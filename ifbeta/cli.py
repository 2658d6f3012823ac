"""The ``ifbeta`` command: one sub-command per module in ``ifbeta/commands`` (explicit dict).

Bad input gives one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ifbeta import __version__
from ifbeta.commands import COMMANDS


class UserError(Exception):
    """Raised by commands for bad input; printed as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from ifbeta.data import DatasetError
    from ifbeta.models import ModelError
    from ifbeta.store import StoreError

    errors: list[type[BaseException]] = [UserError, DatasetError, ModelError, StoreError, FileNotFoundError]
    try:
        from ifbeta.subset import SubsetError

        errors.append(SubsetError)
    except ImportError:
        pass
    return tuple(errors)


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
    from ifbeta.runtime import limit_blas_threads

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
    except _user_errors() as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"ifbeta {args.command}: error: {message}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"ifbeta {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # run the package's copy of this module: under `python -m ifbeta.cli` this file is __main__, and its
    # UserError would not be the ifbeta.cli.UserError the commands raise (a traceback instead of exit 2)
    from ifbeta import cli

    sys.exit(cli.main())
