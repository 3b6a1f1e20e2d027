"""Failure-aware resumption: workers keep the states where the rule was furthest behind tuned Adam, and a
share of their new runs resume from them."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta_train.config import ConfigError, MetaTrainConfig
from meta_train.train import meta_train
from meta_train.trainer import MetaTrainer
from tests.process_helpers import kill_after_first_checkpoint
from tests.test_meta_train import TINY, assert_same_theta, final_theta, tiny

BUFFER = ["failure_buffer=2", "failure_share=0.5"]


def one_worker(share: float):
    trainer = MetaTrainer(tiny("failure_buffer=2", f"failure_share={share}"))
    state = trainer.init()
    unroller = trainer.estimators[0].unroller
    worker = jax.tree.map(lambda x: x[0], state.estimator_states[0].workers)
    return trainer, state, unroller, worker


@pytest.mark.parametrize("share", [1.0, 1e-9])
def test_a_run_that_ends_resumes_the_worst_kept_state_at_the_share_asked(share):
    trainer, state, unroller, worker = one_worker(share)
    kept = worker._replace(step=jnp.asarray(7, jnp.int32), length=jnp.asarray(55, jnp.int32),
                           params=jax.tree.map(lambda x: x[0] + 1.0, worker.params),
                           opt_state=jax.tree.map(lambda x: x[0], worker.opt_state), failures=())
    runs = jax.tree.map(lambda slot, x: slot.at[1].set(x), worker.failures.runs, kept)
    worker = worker._replace(step=worker.length - 1, failures=worker.failures._replace(
        runs=runs, regrets=jnp.asarray([0.5, 2.0])))
    thetas = jax.tree.map(lambda t: jnp.stack([t, t]), state.theta)
    after, outputs = unroller.step(thetas, worker, trainer.data()[0])
    assert bool(outputs[2])  # the run ended
    if share == 1.0:  # the worst kept state (regret 2.0) goes on, in both particles, and leaves the buffer
        assert int(after.step) == 7 and int(after.length) == 55
        jax.tree.map(lambda x, k: np.testing.assert_array_equal(x, np.stack([k, k])), after.params, kept.params)
        np.testing.assert_array_equal(after.failures.regrets, [0.5, -np.inf])
        # on the key a fresh run would have had: new batches, and not the runs its original run drew after it
        next_key, _ = jax.random.split(worker.run_key)
        np.testing.assert_array_equal(jax.random.key_data(after.run_key), jax.random.key_data(next_key))
    else:  # a fresh run, the buffer untouched
        assert int(after.step) == 0
        np.testing.assert_array_equal(after.failures.regrets, [0.5, 2.0])


def test_a_truncation_end_is_kept_in_place_of_the_least_bad_state():
    trainer, state, unroller, _ = one_worker(0.5)
    unroller.baseline_curves = jnp.zeros((1, 1000))  # regret: the meta-loss itself
    workers = state.estimator_states[0].workers
    workers = workers._replace(failures=workers.failures._replace(
        regrets=jnp.tile(jnp.asarray([[-np.inf, 1e-6]]), (trainer.config.workers_per_config, 1))))
    thetas = jax.tree.map(lambda t: jnp.broadcast_to(t, (trainer.config.workers_per_config, 2) + t.shape), state.theta)
    workers, truncation = unroller.unroll_workers(thetas, workers, trainer.data()[0], 3)
    kept = unroller.remember_failures(workers, truncation)
    regret = np.asarray(unroller.regret(truncation)[:, -1])
    np.testing.assert_allclose(kept.failures.regrets[:, 0], regret)  # the empty slot filled
    np.testing.assert_array_equal(kept.failures.regrets[:, 1], np.float32(1e-6))
    jax.tree.map(lambda k, w: np.testing.assert_array_equal(k[:, 0], w[:, 0]), kept.failures.runs.params, workers.params)
    np.testing.assert_array_equal(kept.failures.runs.step[:, 0], workers.step)


@pytest.mark.slow  # a SIGKILL and a resume: the default path has its own in test_meta_train
def test_a_killed_run_with_a_failure_buffer_resumes_to_the_same_theta(tmp_path):
    """The buffer is part of the checkpointed state: SIGKILL mid-run, resume, and the theta is the
    uninterrupted run's, bit for bit."""
    config = tiny("outer_steps=200", *BUFFER)
    meta_train(config, tmp_path / "uninterrupted", compare=False, log=lambda line: None)
    workdir = tmp_path / "killed"
    command = [sys.executable, "-m", "meta_train", "--config", "quadratic", "--workdir", str(workdir),
               "--no-compare"] + [arg for field in TINY + ["outer_steps=200"] + BUFFER for arg in ("--set", field)]
    kill_after_first_checkpoint(command, workdir, timeout=120)
    lines = []
    meta_train(config, workdir, resume=True, compare=False, log=lines.append)
    assert any(line.startswith("resuming from the checkpoint at step") for line in lines), lines
    assert (workdir / "curriculum_baselines.json").is_file()  # the regret it keeps states by
    assert_same_theta(final_theta(workdir), final_theta(tmp_path / "uninterrupted"))


@pytest.mark.parametrize("changes,message", [
    (["failure_buffer=-1"], "failure_buffer=-1: must be non-negative"),
    (["failure_share=0"], "failure_share=0.0: must lie in"),
    (["failure_buffer=2", "estimator=tbptt"], "failure_buffer=2: resumes the runs of ES workers"),
])
def test_bad_failure_buffer_settings_are_refused_in_one_line(changes, message):
    from meta_train.config import with_overrides
    with pytest.raises(ConfigError, match=message):
        with_overrides(MetaTrainConfig(), changes)
