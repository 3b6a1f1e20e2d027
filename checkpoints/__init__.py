"""Saving and loading learned-optimizer meta-parameters and meta-training state with orbax."""
