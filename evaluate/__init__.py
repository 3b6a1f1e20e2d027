"""Generalization evaluation of optimizers on held-out tasks against tuned baselines."""
