"""Saving and loading learned-optimizer meta-parameters with orbax, and the pretrained optimizers that
ship inside the package (`checkpoints/pretrained/NAME/`)."""

from pathlib import Path

from checkpoints.store import FORMAT_VERSION, CheckpointError, load, load_spec, save

PRETRAINED_DIRECTORY = Path(__file__).resolve().parent / "pretrained"
