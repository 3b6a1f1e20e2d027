"""Shared helper for the tests that kill a real meta-training process."""

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def kill_after_first_checkpoint(command: list[str], workdir: Path, timeout: float) -> None:
    """Runs command (a meta_train process on workdir) and SIGKILLs it once a checkpoint is on disk."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=dict(os.environ))
    deadline = time.time() + timeout
    checkpoints = workdir / "checkpoints"
    while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.time() < deadline, f"no checkpoint within {timeout:.0f} s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (workdir / "optimizer").exists(), "the run finished before it was killed: nothing tested"
