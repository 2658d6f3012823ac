"""The command line of the golden-fixture scripts (proxy_golden.py, knn_golden.py): every problem's
outputs, keyed "<problem>/<output>", written to one compressed .npz that the tests compare against."""
from __future__ import annotations

import argparse
import pathlib
from typing import Callable

import numpy as np


def main(description: str, problems: dict[str, dict], problem_outputs: Callable[..., dict], default_out) -> None:
    """Parse --out (default ``default_out``), compute ``problem_outputs(**settings)`` for each problem, save."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=str(default_out))
    arguments = parser.parse_args()
    arrays = {}
    for name, settings in problems.items():
        arrays.update({f"{name}/{key}": value for key, value in problem_outputs(**settings).items()})
    np.savez_compressed(arguments.out, **arrays)
    print(f"wrote {arguments.out} ({pathlib.Path(arguments.out).stat().st_size} bytes, {len(arrays)} arrays)")
