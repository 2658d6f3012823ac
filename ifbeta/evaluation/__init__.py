"""Evaluation: benchmark grids, their reports, transfer checks and cached diagnostics."""
