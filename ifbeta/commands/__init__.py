"""Sub-commands of ``ifbeta`` (explicit dict: name -> module with HELP, add_arguments, run)."""
from __future__ import annotations

from ifbeta.commands import (bench, distill, export, extract, prune, score, select, train_teacher, transfer_check,
                             validate_influence)

COMMANDS = {
    "train-teacher": train_teacher,
    "extract": extract,
    "score": score,
    "validate-influence": validate_influence,
    "prune": prune,
    "select": select,
    "distill": distill,
    "bench": bench,
    "transfer-check": transfer_check,
    "export": export,
}
