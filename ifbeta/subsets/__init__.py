"""Subsets: the subset file (write, read, validate) and its exports."""
