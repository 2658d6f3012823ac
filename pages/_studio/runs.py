"""Background distillation runs: launch ``ifbeta distill`` processes, follow and cancel them."""
from __future__ import annotations

from pathlib import Path

from ifbeta.distill import runs, summary

from .feedback import engine_errors
from .state import WorkspaceSpec
from .steps import PROJECT_ROOT, store


def launch_run(ws_spec: WorkspaceSpec, *, subset: str, student: str, epochs: int, seed: int, name: str) -> Path:
    """Start ``ifbeta distill`` in the background (own process group, survives reloads) -> run directory."""
    return runs.launch(store(), name=name, dataset=ws_spec.dataset, subset=subset, student=student, epochs=epochs,
                       seed=seed, cwd=PROJECT_ROOT, **ws_spec.options())


def app_runs() -> list[dict]:
    """Runs launched from the app (newest first): launch record + status + progress + log tail, with the
    run's ``config.json`` fields beneath (method, ratio, seed: what ``summary.label`` reads) once written."""
    records = []
    for record in runs.launched_runs(store()):
        config = runs.read_json(Path(record["out"]) / "config.json") or {}
        records.append({**config, **record})
    return records


def labelled(records: list[dict]) -> dict[str, dict]:
    """{short label: record} (``summary.label``; a repeated label gets its run's name added)."""
    found: dict[str, dict] = {}
    for record in records:
        label = summary.label(record)
        found[label if label not in found else f"{label} ({record.get('name', '?')})"] = record
    return found


def cancel_run(record: dict) -> None:
    """Stop a running distillation (its whole process group) and mark it cancelled."""
    runs.cancel(record["out"])


def all_runs() -> list[dict]:
    """Every distillation known to the store (app and CLI), via ``distill.list_runs``."""
    from ifbeta.distill import student as distill

    with engine_errors(stop=False):
        return distill.list_runs(store())
    return []
