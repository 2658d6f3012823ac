"""Every error the engine raises for bad input, in one place.

Each one carries a message that says what is wrong and what to do. The command line prints it as
one line and exits with code 2; the app shows it on the page. Nothing here imports another stage,
so any module can raise these without an import circle.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input to a command (flags that contradict each other, a missing file); printed as one line."""


class StoreError(RuntimeError):
    """An artefact is unreadable or was written with a different config."""


class CorruptArtefact(StoreError):
    """A stored artefact failed its content check and was moved to the store's quarantine; computing it
    again (rerunning the command) replaces it."""


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message says what to do."""


class ModelError(ValueError):
    """A model or checkpoint cannot be built or loaded; the message says why and what to do."""


class SubsetError(ValueError):
    """A subset directory is missing, corrupt or made for another dataset; the message says what to do."""


class RunError(ValueError):
    """A run directory belongs to a different run, or the request is inconsistent."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, DatasetError, ModelError, StoreError, SubsetError,
                                                RunError, FileNotFoundError)
"""What a face reports as one line of text instead of a traceback."""
