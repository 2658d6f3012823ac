"""Sub-commands of ``ifbeta`` (explicit dict: name -> module with HELP, add_arguments, run)."""
from __future__ import annotations

from ifbeta.commands import train_teacher

COMMANDS = {
    "train-teacher": train_teacher,
}
