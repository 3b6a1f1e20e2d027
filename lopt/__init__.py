"""Learned optimizers: architectures, muP rules, hand-designed baselines and the Optax adapter."""
