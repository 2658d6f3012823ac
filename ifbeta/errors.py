"""Every error the engine raises for bad input, in one place.

Each one carries a message that says what is wrong and what to do. The command line prints it as
one line and exits with code 2; the app shows it on the page. Nothing here imports another stage,
so any module can raise these without an import circle.

What to do often differs per face (a flag on the command line, a checkbox in the app): such an
error is raised as ``ModelError(what, fix="trust_pickle")``; ``str(error)`` is the command line's
wording and ``in_app(error)`` the app's, both taken from ``FIXES``.
"""
from __future__ import annotations

FIXES: dict[str, tuple[str, str]] = {
    "skip_corrupt": ("fix or remove them, or pass --skip-corrupt to leave them out",
                     "fix or remove them, or tick 'skip unreadable images' in the sidebar to leave them out"),
    "trust_pickle": ("pass --trust-pickle if you trust this file (loading it runs code from the file)",
                     "turn on 'trust this pickle' if you trust this file (loading it runs code from the file)"),
    "teacher_arch": ("pass --teacher-arch {value}", "choose {value} as the architecture"),
    "name_arch": ("pass --teacher-arch (one of {value})", "choose its architecture (one of {value})"),
    "other_arch": ("is --teacher-arch right?", "is the chosen architecture right?"),
    "force": ("choose a new or empty folder, or pass --force to replace the exported folders in it",
              "choose a new or empty folder"),
    "out": ("choose another --out", "choose another run name"),
}
"""fix name -> (command-line wording, app wording); ``{value}`` is the error's ``value``."""


class _Actionable:
    """Mixin: ``Error(what, fix=name, value=...)`` reads ``what; <fix for this face>``."""

    def __init__(self, what: str = "", *, fix: str | None = None, value: str = ""):
        self.what, self.fix, self.value = str(what), fix, str(value)
        super().__init__(self.text(0))

    def text(self, face: int) -> str:
        """The message for face 0 (command line) or 1 (app)."""
        if self.fix is None:
            return self.what
        return f"{self.what}; {FIXES[self.fix][face].format(value=self.value)}"


class UserError(_Actionable, Exception):
    """Bad input to a command (flags that contradict each other, a missing file); printed as one line."""


class StoreError(_Actionable, RuntimeError):
    """An artefact is unreadable or was written with a different config."""


class CorruptArtefact(StoreError):
    """A stored artefact failed its content check and was moved to the store's quarantine; computing it
    again (rerunning the command) replaces it."""


class DatasetError(_Actionable, ValueError):
    """A dataset cannot be loaded; the message says what to do."""


class ModelError(_Actionable, ValueError):
    """A model or checkpoint cannot be built or loaded; the message says why and what to do."""


class SubsetError(_Actionable, ValueError):
    """A subset directory is missing, corrupt or made for another dataset; the message says what to do."""


class RunError(_Actionable, ValueError):
    """A run directory belongs to a different run, or the request is inconsistent."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, DatasetError, ModelError, StoreError, SubsetError,
                                                RunError, FileNotFoundError)
"""What a face reports as one line of text instead of a traceback."""


def in_app(error: BaseException) -> str:
    """The error's message in the app's words (its fix names a widget, not a flag)."""
    return error.text(1) if isinstance(error, _Actionable) else str(error)
