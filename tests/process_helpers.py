"""Shared helpers for the tests that run real meta-training processes: killed, or several in a group."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from meta_train.distributed import cpu_device_flags

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_group(arguments: list[str], num_processes: int, devices_each: int, port: int | None = None,
                 timeout: int = 20, only: list[int] | None = None) -> list[subprocess.Popen]:
    """`python -m meta_train ARGUMENTS` as a group of processes on 127.0.0.1 (or only some of its
    members), each with its own CPU devices; every process's stdout and stderr are captured."""
    port = port or free_port()
    environment = dict(os.environ, XLA_FLAGS=cpu_device_flags(devices_each))
    return [subprocess.Popen([sys.executable, "-m", "meta_train", *arguments, "--coordinator", f"127.0.0.1:{port}",
                              "--num-processes", str(num_processes), "--process-id", str(index),
                              "--distributed-timeout", str(timeout)],
                             cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for index in (range(num_processes) if only is None else only)]


def finish(processes: list[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    """(return code, stdout, stderr) of each process; kills them all if any runs past timeout."""
    deadline = time.time() + timeout
    results = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=max(deadline - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise AssertionError(f"a process of the group ran past {timeout:.0f} s")
        results.append((process.returncode, out, err))
    return results
