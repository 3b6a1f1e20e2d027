"""Meta-training in a group of processes on JAX's distributed runtime, for real: processes launched by
the tests on 127.0.0.1, each with its own CPU devices, exchanging collectives over gloo."""

import shutil
import signal
import time

import jax
import numpy as np
import pytest

import lopt
from meta_train import checkpointing, distributed
from meta_train.distributed import DistributedError, ProcessLayout
from meta_train.train import meta_train
from meta_train.trainer import MetaTrainer
from tests.process_helpers import finish, free_port, launch_group
from tests.test_meta_train import TINY, tiny

# The run of every test here: 4 workers, so 2 processes x 2 devices hold one worker per device.
LONG = TINY + ["outer_steps=600"]


def arguments(workdir, fields, *more):
    return ["--config", "quadratic", "--workdir", str(workdir), "--no-compare",
            *[part for field in fields for part in ("--set", field)], *more]


def theta_of(workdir):
    return lopt.load_optimizer(workdir / "optimizer")[1]


def assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def assert_close(a, b):
    # The group reduces the meta-gradient over processes in another order than one process does:
    # equal up to float32 rounding, which 40 Adam steps of theta carry to about 1e-6.
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=2e-6), a, b)


@pytest.fixture(scope="module")
def group_run(tmp_path_factory):
    """Two processes x two devices, 600 outer steps, uninterrupted."""
    workdir = tmp_path_factory.mktemp("group")
    results = finish(launch_group(arguments(workdir, LONG), 2, 2), timeout=90)
    assert [code for code, _, _ in results] == [0, 0], results
    return workdir, results


def test_two_processes_meta_train_the_theta_of_one_process_with_four_devices_and_process_zero_alone_writes(tmp_path):
    fields = TINY + ["outer_steps=40", "checkpoint_every=20", "log_every=20"]
    results = finish(launch_group(arguments(tmp_path / "group", fields), 2, 2), timeout=60)
    assert [code for code, _, _ in results] == [0, 0], results
    assert len(jax.devices()) == 4, "conftest asks XLA for four CPU devices"
    alone = meta_train(tiny("outer_steps=40"), tmp_path / "alone", compare=False, log=lambda line: None)
    assert_close(theta_of(tmp_path / "group"), jax.device_get(alone.theta))
    # Process zero alone logs and writes the files.
    (_, first_out, first_err), (_, second_out, second_err) = results
    assert "over 4 cpu device(s) in 2 processes" in first_out and "saved the learned optimizer" in first_out
    assert "step 40/40" in first_err
    # (gloo itself prints "[Gloo] Rank R is connected to N peer ranks ..." to every process's stdout, from
    # threads whose lines may interleave)
    assert [line for line in second_out.splitlines() if "[Gloo]" not in line and "peer ranks" not in line] == []
    assert "step " not in second_err
    assert len(list((tmp_path / "group" / "tensorboard").iterdir())) == 1  # one event file
    assert sorted(p.name for p in (tmp_path / "group" / "checkpoints").iterdir()) == ["20", "40"]


@pytest.mark.slow
def test_a_killed_process_stops_the_other_and_both_resume_to_the_same_theta(group_run, tmp_path):
    uninterrupted, _ = group_run
    workdir = tmp_path / "killed"
    processes = launch_group(arguments(workdir, LONG), 2, 2, timeout=10)
    checkpoints, deadline = workdir / "checkpoints", time.time() + 60
    while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert all(process.poll() is None for process in processes), finish(processes, 5)
        assert time.time() < deadline, "no checkpoint within 60 s"
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    (code, _, err), _ = finish(processes, timeout=40)
    # A collective that fails at once, or the watchdog after --distributed-timeout (10 s).
    assert code == 2 and time.time() - killed_at < 30, (code, err)
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "relaunch every process with --resume" in error_lines[0], err
    assert not (workdir / "optimizer").exists(), "the run finished before it was killed: nothing tested"
    elsewhere = tmp_path / "resumed_alone"
    shutil.copytree(workdir, elsewhere)

    results = finish(launch_group(arguments(workdir, LONG, "--resume"), 2, 2), timeout=90)
    assert [code for code, _, _ in results] == [0, 0], results
    assert "resuming from the checkpoint at step" in results[0][1]
    assert_same(theta_of(workdir), theta_of(uninterrupted))
    # The same checkpoint resumed by one process with four devices: orbax places every array of the
    # two processes' state, exactly, on the new layout, and the run goes on from there.
    trainer = MetaTrainer(tiny("outer_steps=600"))
    with checkpointing.manager(elsewhere, keep=2) as manager:
        step = manager.latest_step()
        state = checkpointing.restore_newest_good(manager, trainer.init(), log=lambda line: None)
        saved = checkpointing.read_saved(manager, step)
    assert int(state.step) == step
    restored, written = (checkpointing.named_arrays(jax.device_get(tree)) for tree in (checkpointing.savable(state), saved))
    assert restored.keys() == written.keys()
    for name in written:
        np.testing.assert_array_equal(restored[name], written[name], err_msg=name)
    lines = []
    meta_train(tiny("outer_steps=600"), elsewhere, resume=True, compare=False, log=lines.append)
    assert f"resuming from the checkpoint at step {step}" in lines, lines
    assert (elsewhere / "optimizer").is_dir()


def test_a_process_that_cannot_reach_the_coordinator_stops_with_one_line(tmp_path):
    port = free_port()  # nobody listens there: process 0 never starts
    started = time.time()
    [(code, _, err)] = finish(launch_group(arguments(tmp_path / "w", TINY), 2, 1, port, timeout=3, only=[1]), 40)
    assert code == 2 and time.time() - started < 30, err
    assert err.strip().splitlines()[-1] == (
        f"error: process 1 cannot reach the coordinator at 127.0.0.1:{port} within 3 s (Connection refused); "
        "is process 0 running, and is the address reachable?")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("flags, environ, message", [
    ((None, 2, 0), {}, "missing --coordinator (or $JAX_COORDINATOR_ADDRESS)"),
    (("host:1", None, None), {"JAX_NUM_PROCESSES": "2"}, "missing --process-id (or $JAX_PROCESS_ID)"),
    (("host:1", 2, 2), {}, "process id 2 of 2 processes: the id must be in 0..1"),
    (("host", 2, 0), {}, "coordinator 'host': expected HOST:PORT"),
    ((None, None, None), {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     "must be integers, not 'two' and '0'"),
])
def test_a_bad_process_layout_is_named(flags, environ, message):
    with pytest.raises(DistributedError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        ProcessLayout.from_flags(*flags, environ=environ)


def test_the_layout_comes_from_flags_the_environment_or_the_cluster_manager():
    environ = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert ProcessLayout.from_flags(None, None, None, environ=environ) == ProcessLayout("10.0.0.1:1234", 4, 3)
    assert ProcessLayout.from_flags(None, None, 1, environ=environ).process_id == 1  # a flag wins
    assert ProcessLayout.from_flags(None, None, None, environ={"SLURM_NTASKS": "8"}).detect
    alone = ProcessLayout.from_flags(None, None, None, environ={"SLURM_NTASKS": "1"})
    assert not alone.several and not distributed.ProcessLayout.from_flags(None, None, None, environ={}).several


def test_the_command_line_refuses_a_bad_layout_in_one_line_before_waiting(capsys, tmp_path):
    from meta_train.__main__ import main
    assert main(["--config", "quadratic", "--workdir", str(tmp_path / "w"), "--num-processes", "2",
                 "--process-id", "0"]) == 2
    assert capsys.readouterr().err == ("error: a process layout needs all of coordinator, process count and process "
                                       "id; missing --coordinator (or $JAX_COORDINATOR_ADDRESS)\n")
    assert main(["--config", "quadratic", "--set", "num_taks=4", "--coordinator", "127.0.0.1:1", "--num-processes",
                 "2", "--process-id", "1"]) == 2  # a bad field is named at once, not after the group's timeout
    assert "num_taks" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
