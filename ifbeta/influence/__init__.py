"""Influence: the KD-aligned linear proxy (objective, fit), linear solvers, cross-fitted scores, leave-one-out checks."""
