"""Distillation: student runs on a subset (KD), their records, and background runs."""
