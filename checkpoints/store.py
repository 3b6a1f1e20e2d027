"""Meta-parameters on disk: an orbax checkpoint of the pytree plus a JSON spec beside it.

    DIRECTORY/spec.json   the spec (architecture, settings, provenance) and the format version
    DIRECTORY/theta/      the meta-parameters, written by orbax (no pickle: loading runs no code)

Saves are atomic: everything is written into a hidden sibling directory, which is renamed into place
only once complete. Saving over an existing checkpoint moves the old one aside first and deletes it
only after the new one is in place, so a crash at any moment leaves a checkpoint that loads.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

FORMAT_VERSION = 1
SPEC_FILE = "spec.json"
THETA_DIR = "theta"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, corrupt or from a newer format."""


def _sibling(directory: Path, tag: str) -> Path:
    return directory.parent / f".{directory.name}.{tag}-{uuid.uuid4().hex[:8]}"


def _local_checkpointer() -> ocp.StandardCheckpointer:
    """A checkpointer of this process alone: a learned optimizer's checkpoint is a small file that one
    process writes or reads, also inside a group of processes (orbax would otherwise wait for them all)."""
    this = jax.process_index()
    return ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=this, active_processes={this}))


def save(directory: str | os.PathLike, theta: Any, spec: dict[str, Any]) -> Path:
    """Writes theta and spec to directory atomically, replacing a checkpoint already there.

    Refuses to replace a directory that is not a checkpoint, so a mistyped path loses nothing.
    """
    directory = Path(directory).absolute()
    try:
        spec_text = json.dumps({**spec, "format_version": FORMAT_VERSION,
                                "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat()},
                               indent=2, sort_keys=True)
    except TypeError as error:
        raise CheckpointError(f"the spec must be JSON-serializable: {error}") from None
    if directory.exists() and not (directory / SPEC_FILE).is_file() and any(directory.iterdir()):
        raise CheckpointError(f"{directory} exists and is not a checkpoint (no {SPEC_FILE}); "
                              "refusing to overwrite it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(directory, "saving")
    try:
        staging.mkdir()
        theta = jax.tree.map(np.asarray, theta)  # host copies: the checkpoint does not pin a device
        with _local_checkpointer() as checkpointer:
            checkpointer.save(staging / THETA_DIR, theta)
            checkpointer.wait_until_finished()
        # The spec is written last: a directory with a spec has a complete theta beside it.
        with open(staging / SPEC_FILE, "w", encoding="utf-8") as spec_file:
            spec_file.write(spec_text)
            spec_file.flush()
            os.fsync(spec_file.fileno())
        previous = None
        if directory.exists():
            previous = _sibling(directory, "previous")
            directory.rename(previous)
        staging.rename(directory)
        if previous is not None:
            shutil.rmtree(previous)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return directory


def _read_spec(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        left_behind = sorted(directory.parent.glob(f".{directory.name}.previous-*"))
        hint = (f"; an interrupted save left the previous checkpoint at {left_behind[-1]}"
                if left_behind else "")
        raise CheckpointError(f"no checkpoint at {directory}{hint}")
    spec_path = directory / SPEC_FILE
    if not spec_path.is_file():
        raise CheckpointError(f"{directory} is not a checkpoint: {SPEC_FILE} is missing")
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{spec_path} is corrupt: {error}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("format_version"), int):
        raise CheckpointError(f"{spec_path} has no format_version; it was not written by checkpoints.save")
    if spec["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{directory} has format version {spec['format_version']}, newer than this "
                              f"library reads ({FORMAT_VERSION}); upgrade the package")
    return spec


def load_spec(directory: str | os.PathLike) -> dict[str, Any]:
    """Only the spec: cheap, for listing checkpoints."""
    return _read_spec(Path(directory).absolute())


def load(directory: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """(theta as NumPy arrays, spec). Raises CheckpointError naming what is wrong."""
    directory = Path(directory).absolute()
    spec = _read_spec(directory)
    theta_path = directory / THETA_DIR
    try:
        with _local_checkpointer() as checkpointer:
            metadata = checkpointer.metadata(theta_path).item_metadata.tree
            target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), metadata)
            # An explicit target restores onto this machine's default device, whatever device saved it.
            theta = checkpointer.restore(theta_path, target)
    except Exception as error:  # orbax and tensorstore raise many types for a damaged file
        raise CheckpointError(f"{theta_path}: cannot read the meta-parameters "
                              f"({type(error).__name__}: {str(error)[:300]})") from None
    return jax.tree.map(np.asarray, theta), spec
