"""Several processes, on one machine or many, on JAX's own distributed runtime.

Every process runs the same program: `join` calls `jax.distributed.initialize` (CPU processes exchange
collectives over gloo), after which `jax.devices()` lists every process's devices and the task mesh
spans them all. Each process computes its share of the workers; theta and the meta-optimizer state are
replicated, so every process holds the same copy. Files outside orbax's checkpoints (config.json,
TensorBoard, the saved optimizer, the comparison) are written by process 0 alone.

Failures are bounded in time, each reported in one line. A process that cannot reach the coordinator,
or a group that does not assemble, stops after `timeout` seconds (JAX itself would abort with a stack
trace). A process that dies makes the others' next collective fail (`PeerLostError`), or, where the
collective only waits, leaves them with no outer step done for `timeout` seconds (`StallWatchdog`).
JAX's coordination service, which ends every process of a group whose member stops sending heartbeats,
is set to twice that, as the last resort.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
import time
from typing import Callable, Mapping

from importlib.metadata import version

import jax
from jax.experimental import multihost_utils

# The environment variables of the process layout, read when the flags are not given. JAX itself reads
# JAX_COORDINATOR_ADDRESS; the other two are this library's, named alike.
ENVIRONMENT = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
               "process_id": "JAX_PROCESS_ID"}
# Cluster managers whose layout JAX detects by itself, and the variable that gives their process count.
CLUSTER_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
DEFAULT_TIMEOUT = 120


class DistributedError(RuntimeError):
    """The process group cannot be joined, or it lost a member."""


class PeerLostError(DistributedError):
    """A collective failed because another process of the group is gone."""


@dataclasses.dataclass(frozen=True)
class ProcessLayout:
    """Where a process stands in the group: all None for one process alone (or for a cluster manager
    that JAX detects, with `detect=True`)."""

    coordinator: str | None = None  # HOST:PORT of process 0's coordination service
    num_processes: int | None = None
    process_id: int | None = None
    detect: bool = False  # let jax.distributed.initialize read the cluster manager's environment
    timeout: int = DEFAULT_TIMEOUT  # seconds to assemble the group, and to notice a silent process

    @classmethod
    def from_flags(cls, coordinator: str | None, num_processes: int | None, process_id: int | None,
                   timeout: int = DEFAULT_TIMEOUT, environ: Mapping[str, str] = os.environ) -> "ProcessLayout":
        """Flags first, then the environment; raises DistributedError naming what is missing or wrong."""
        values = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
        for field, variable in ENVIRONMENT.items():
            if values[field] is None and environ.get(variable):
                values[field] = environ[variable]
        if not isinstance(timeout, int) or timeout <= 0:
            raise DistributedError(f"--distributed-timeout {timeout!r}: must be a positive number of seconds")
        if all(value is None for value in values.values()):
            detect = any(_as_int(environ.get(name)) > 1 for name in CLUSTER_SIZE_VARIABLES)
            return cls(detect=detect, timeout=timeout)
        missing = [f"--{field.replace('_', '-')} (or ${ENVIRONMENT[field]})"
                   for field, value in values.items() if value is None]
        if missing:
            raise DistributedError(f"a process layout needs all of coordinator, process count and process id; "
                                   f"missing {', '.join(missing)}")
        try:
            num_processes, process_id = int(values["num_processes"]), int(values["process_id"])
        except ValueError:
            raise DistributedError(f"the process count and id must be integers, not "
                                   f"{values['num_processes']!r} and {values['process_id']!r}") from None
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise DistributedError(f"process id {process_id} of {num_processes} processes: the id must be in "
                                   f"0..{num_processes - 1}")
        host, _, port = str(values["coordinator"]).rpartition(":")
        if not host or not port.isdigit():
            raise DistributedError(f"coordinator {values['coordinator']!r}: expected HOST:PORT, e.g. 10.0.0.1:12345")
        return cls(str(values["coordinator"]), num_processes, process_id, timeout=timeout)

    @property
    def several(self) -> bool:
        return self.detect or (self.num_processes or 1) > 1


def cpu_device_flags(count: int) -> str:
    """XLA_FLAGS for a process with `count` CPU devices that wait for each other at collectives however
    loaded the machine is (set before JAX first uses a device). XLA:CPU kills the process ("Fatal Python
    error: Aborted", after "Termination timeout for `all reduce ...` of 40 seconds exceeded") when a
    device has waited 60 s for the others at a collective (a warning at 20 s, then 40 s more), which
    device threads on a CPU shared with other jobs reach in a meta-training step; jaxlib 0.8.0 on lets
    that wait be raised (older ones abort on the unknown flag, so it is left out there)."""
    flags = [f"--xla_force_host_platform_device_count={count}"]
    if tuple(int(part) for part in version("jaxlib").split(".")[:2]) >= (0, 8):
        flags.append("--xla_cpu_collective_call_terminate_timeout_seconds=1800")
    return " ".join(flags)


def _as_int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


_joined = ProcessLayout()  # the layout this process joined with


def timeout() -> int:
    """Seconds after which a silent group is taken for broken (the joined layout's timeout)."""
    return _joined.timeout


def join(layout: ProcessLayout) -> None:
    """Joins the process group (before anything else touches JAX's devices); nothing for one process.
    Raises DistributedError, or ends the process with one line, within layout.timeout seconds."""
    global _joined
    if not layout.several:
        return
    # CPU collectives across processes go over gloo (TCP); accelerators use their own interconnect.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if not layout.detect:
        _check_coordinator(layout)
    what = (f"process {layout.process_id} of {layout.num_processes} (coordinator {layout.coordinator})"
            if not layout.detect else "the process group of the cluster manager")
    # JAX aborts with a stack trace when the group does not assemble in time; say it in one line first.
    watchdog = _Watchdog(layout.timeout, f"{what}: the group did not assemble within {layout.timeout} s "
                                         "(is every process started, with the same coordinator and count?)")
    try:
        jax.distributed.initialize(layout.coordinator, layout.num_processes, layout.process_id,
                                   initialization_timeout=layout.timeout + 30,
                                   heartbeat_timeout_seconds=2 * layout.timeout)
    except Exception as error:  # jaxlib raises a bare RuntimeError / XlaRuntimeError
        raise DistributedError(f"{what}: jax.distributed.initialize failed: {_first_line(error)}") from None
    finally:
        watchdog.cancel()
    _joined = layout


def _check_coordinator(layout: ProcessLayout) -> None:
    """Process 0 must be able to listen on the coordinator's port; every other process must reach it."""
    host, _, port = layout.coordinator.rpartition(":")
    if layout.process_id == 0:
        with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host.strip("[]"), int(port)))
            except OSError as error:
                raise DistributedError(f"process 0 cannot listen on {layout.coordinator} for the coordinator: "
                                       f"{error.strerror or error}") from None
        return
    deadline = time.monotonic() + layout.timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise DistributedError(f"process {layout.process_id} cannot reach the coordinator at "
                                       f"{layout.coordinator} within {layout.timeout} s ({error.strerror or error}); "
                                       "is process 0 running, and is the address reachable?") from None
            time.sleep(0.5)


class _Watchdog:
    """Prints a line and ends the process unless cancelled within `seconds`."""

    def __init__(self, seconds: float, message: str):
        self._timer = threading.Timer(seconds, _fail, args=(message,))
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    exit_now(2)


class StallWatchdog:
    """Ends this process with one line when `beat` has not been called for `seconds` while armed: a
    collective that waits for a process that is gone, or hangs, never returns. Armed by the first beat
    (after the compilation of the first step), disarmed by `stop`."""

    def __init__(self, seconds: float, what: str = "outer step"):
        self.seconds, self.what = seconds, what
        self._last: float | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="stall-watchdog")
        self._thread.start()

    def beat(self) -> None:
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(min(1.0, self.seconds / 4)):
            if self._last is not None and time.monotonic() - self._last > self.seconds:
                _fail(f"process {jax.process_index()} of {jax.process_count()}: no {self.what} finished for "
                      f"{self.seconds:.0f} s; another process has likely died or hung. What was checkpointed is "
                      "kept: relaunch every process with --resume (--distributed-timeout sets this limit)")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def is_main() -> bool:
    """Process 0: the one that writes files and prints."""
    return jax.process_index() == 0


def main_only(log: Callable[[str], None]) -> Callable[[str], None]:
    return log if is_main() else (lambda line: None)


def barrier(name: str) -> None:
    """Waits until every process gets here (nothing with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def lost_peer(error: BaseException) -> PeerLostError:
    """The error a failed collective is reported as, in one line."""
    return PeerLostError(f"process {jax.process_index()} of {jax.process_count()}: a collective with the other "
                         f"processes failed ({_first_line(error)}); another process has likely died. What was "
                         "checkpointed is kept: relaunch every process with --resume")


def exit_now(code: int) -> None:
    """Ends a member of a broken group at once: the orderly shutdown would wait at a barrier that the
    lost process never reaches, then abort."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
