"""Influence: the KD-aligned linear proxy (objective, fit), linear solvers, cross-fitted scores, teacher-only
statistics, leave-one-out checks (validation)."""
