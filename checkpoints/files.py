"""Files a run writes beside its checkpoints: whole-or-nothing text files, TensorBoard scalars
(written with the tensorboard package alone, imported when a writer is made: `lopt[train]`; TensorFlow
is not a dependency), and the on-disk cache of compiled programs that the command lines use."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import jax

from checkpoints.optional import require


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """The file written whole or not at all: a crash leaves the previous version, never half of one.
    The temporary file's name is unique, so processes writing the same file (two sweeps filling one
    baseline cache) never write into each other's."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it private; results are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ScalarWriter:
    """Appends scalar summaries to an event file in logdir, readable by TensorBoard."""

    def __init__(self, logdir: str | os.PathLike):
        what = "writing TensorBoard events"
        self._event = require("tensorboard.compat.proto.event_pb2", what, "train").Event
        self._summary = require("tensorboard.compat.proto.summary_pb2", what, "train").Summary
        writer = require("tensorboard.summary.writer.event_file_writer", what, "train").EventFileWriter
        self._writer = writer(str(logdir))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        values = [self._summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
        self._writer.add_event(self._event(wall_time=time.time(), step=step, summary=self._summary(value=values)))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def enable_compilation_cache() -> None:
    """Compiled programs are kept on disk, so a resumed or repeated run skips most of its compile time.
    LOPT_COMPILATION_CACHE names the directory; set it empty to switch the cache off."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lopt" / "xla"
    directory = os.environ.get("LOPT_COMPILATION_CACHE", str(default))
    if directory:
        jax.config.update("jax_compilation_cache_dir", directory)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
