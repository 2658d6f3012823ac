"""IF-Beta Studio: influence-guided, learnable data pruning for knowledge distillation."""

__version__ = "0.1.0"
