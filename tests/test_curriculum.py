"""Mixed families and the curriculum: runs restart on every config of their bucket, the sampling follows
the regret estimates above its floor, and a mixed run resumes to the same state."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lopt
import tasks
from meta_train import checkpointing
from meta_train.config import MetaTrainConfig, preset, with_overrides
from meta_train.curriculum import Curriculum, CurriculumState
from meta_train.train import meta_train
from meta_train.trainer import MetaTrainer
from meta_train.truncation import ConstantLength
from meta_train.unroll import Unroller

# Two buckets of tiny models (an MLP on digits or MNIST, a transformer LM), short runs, the regret curriculum.
MIXED = ["task_family=mixed_tiny", "num_task_configs=2", "workers_per_config=2", "truncation_length=4", "min_inner_length=6",
         "max_inner_length=12", "outer_steps=150", "checkpoint_every=25", "log_every=25", "keep_checkpoints=2",
         "curriculum=regret", "curriculum_floor=0.3"]


def mixed(*more: str) -> MetaTrainConfig:
    return with_overrides(preset("mulo"), MIXED + list(more))


def test_the_probabilities_follow_the_regret_and_never_drop_below_the_floor():
    curriculum = Curriculum((2, 1, 1), "regret", floor=0.2)
    uniform = np.array([1 / 6, 1 / 6, 1 / 3, 1 / 3])
    np.testing.assert_allclose(curriculum.uniform(), uniform, rtol=1e-6)
    np.testing.assert_allclose(curriculum.probabilities(curriculum.init()), uniform, rtol=1e-6)  # nothing seen
    state = CurriculumState(regret_average=jnp.array([0.3, -0.2, 0.1, 0.0]) * 0.5,
                            average_weight=jnp.full(4, 0.5), runs_started=jnp.zeros(4))
    probabilities = np.asarray(curriculum.probabilities(state))
    np.testing.assert_allclose(probabilities, 0.2 * uniform + 0.8 * np.array([0.75, 0, 0.25, 0]), rtol=1e-6)
    assert np.all(probabilities >= 0.2 * uniform - 1e-7) and np.isclose(probabilities.sum(), 1)
    assert probabilities[0] > probabilities[2] > probabilities[3]  # more regret, more often
    shares = curriculum.split(jnp.asarray(probabilities))
    np.testing.assert_allclose([float(share) for share, _ in shares], [probabilities[:2].sum(), *probabilities[2:]],
                               rtol=1e-6)
    np.testing.assert_allclose(shares[0][1], probabilities[:2] / probabilities[:2].sum(), rtol=1e-6)
    extreme = state._replace(regret_average=jnp.array([100.0, 0, 0, 0]))
    assert np.all(np.asarray(curriculum.probabilities(extreme)) >= 0.2 * uniform - 1e-7)
    assert np.allclose(Curriculum((2, 1, 1), "uniform").probabilities(state), uniform)  # uniform ignores regret


def test_the_regret_estimate_averages_only_the_steps_that_saw_a_config():
    curriculum = Curriculum((2,), "regret", decay=0.5)
    state = curriculum.update(curriculum.init(), steps=jnp.array([4.0, 0.0]), regret_sums=jnp.array([2.0, 0.0]),
                              runs_started=jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(curriculum.regret(state), [0.5, 0.0])  # bias-corrected: the first mean itself
    state = curriculum.update(state, steps=jnp.array([2.0, 5.0]), regret_sums=jnp.array([-1.0, 1.0]),
                              runs_started=jnp.array([0.0, 2.0]))
    np.testing.assert_allclose(curriculum.regret(state), [(0.25 * 0.5 - 0.25) / 0.75, 0.2], rtol=1e-6)
    np.testing.assert_allclose(state.runs_started, [1.0, 2.0])


def _bucket_unroller():
    bucket = tuple(tasks.get_task(c) for c in tasks.FAMILIES["mixed_tiny"].buckets[0])
    optimizer = lopt.Adam(parameterization="mup")
    return Unroller(bucket, optimizer, ConstantLength(3), num_particles=1, max_meta_loss=3.0), optimizer


def test_fresh_runs_draw_every_config_of_the_bucket_with_the_given_probabilities():
    unroller, optimizer = _bucket_unroller()
    workers = 8
    thetas = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (workers, 1) + leaf.shape), optimizer.init(None))

    @jax.jit
    def started(probs):
        state = jax.vmap(lambda key: unroller.init(jax.tree.map(lambda t: t[0], thetas), key, False, probs))(
            jax.random.split(jax.random.key(0), workers))
        _, truncation = unroller.unroll_workers(thetas, state, unroller.data, 30, probs)
        return jnp.sum(jax.nn.one_hot(truncation.next_variants, 2) * truncation.resets[..., None], axis=(0, 1))

    counts = np.asarray(started(jnp.array([0.5, 0.5])))
    assert counts.sum() == workers * 10  # a reset every 3 steps
    assert counts.min() >= 25, counts  # both datasets, about half each (binomial, 80 draws)
    assert np.asarray(started(jnp.array([1.0, 0.0])))[1] == 0
    skewed = np.asarray(started(jnp.array([0.9, 0.1])))
    assert skewed[0] > 3 * skewed[1], skewed


def test_each_config_of_a_bucket_draws_its_batches_from_its_own_dataset():
    unroller, _ = _bucket_unroller()
    key = jax.random.key(3)
    for variant, task in enumerate(unroller.variants):
        for split in ("train", "valid"):
            drawn = jax.jit(unroller._batch, static_argnums=3)(unroller.data, variant, key, split)
            jax.tree.map(np.testing.assert_array_equal, drawn, task.batch(task.data, key, split))
    digits, mnist = (jax.jit(unroller._batch, static_argnums=3)(unroller.data, v, key, "train") for v in (0, 1))
    assert not np.array_equal(digits[0], mnist[0])  # (inputs, targets) batches


def test_a_bucket_refuses_configs_of_another_model_or_shape():
    digits, mnist = tasks.FAMILIES["mixed_tiny"].buckets[0]
    with pytest.raises(tasks.ConfigError, match="differs from .* in more than its dataset"):
        tasks.MixedFamily(buckets=((digits, mnist.replace(width=16)),))
    with pytest.raises(ValueError, match="same shapes"):
        Unroller((tasks.get_task(digits), tasks.get_task(digits.replace(image_size=14))), lopt.Adam(),
                 ConstantLength(3), num_particles=1, max_meta_loss=3.0)
    # A bucketed family trains all its buckets, whatever num_task_configs says: a preset fits any family.
    assert len(tasks.FAMILIES["mixed_tiny"].sample_buckets(jax.random.key(0), 3)) == 2


def test_the_regret_is_the_gap_to_the_baseline_at_the_same_step():
    unroller, optimizer = _bucket_unroller()
    thetas = jax.tree.map(lambda leaf: leaf[None], optimizer.init(None))
    worker = unroller.init(thetas, jax.random.key(1), stagger=False)
    unroller.baseline_curves = jnp.stack([jnp.arange(1.0, 4.0), 10 * jnp.arange(1.0, 4.0)])  # (variants, 3)
    _, truncation = unroller.unroll(thetas, worker, unroller.data, 5)
    expected = (truncation.meta_losses[0]
                - np.where(truncation.variants == 0, 1, 10) * truncation.steps.astype(np.float32))
    np.testing.assert_allclose(unroller.regret(truncation), expected, rtol=1e-6)
    np.testing.assert_array_equal(truncation.steps, [1, 2, 3, 1, 2])


def _curriculum_arrays(workdir: Path, config: MetaTrainConfig):
    with checkpointing.manager(workdir, config.keep_checkpoints) as manager:
        state = checkpointing.restore_newest_good(manager, MetaTrainer(config).init(), lambda line: None)
    return jax.device_get((state.curriculum, [s.workers.variant for s in state.estimator_states]))


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mixed")
    lines = []
    meta_train(mixed(), workdir, compare=False, log=lines.append)
    return workdir, lines


@pytest.mark.slow
def test_a_mixed_run_logs_the_curriculum_and_the_families_sampled(mixed_run):
    workdir, lines = mixed_run
    assert any(line.startswith("curriculum baseline image_mlp/digits_8_w8_d1: tuned Adam") for line in lines), lines
    baselines = json.loads((workdir / "curriculum_baselines.json").read_text())
    assert [cell["name"] for cell in baselines["cells"]] == [
        "image_mlp/digits_8_w8_d1", "image_mlp/mnist_8_w8_d1", "language_model/shakespeare_w8_d1"]
    assert all(len(cell["curve"]) == 12 for cell in baselines["cells"])
    events = EventAccumulator(str(workdir / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    for name in ("image_mlp/digits_8_w8_d1", "image_mlp/mnist_8_w8_d1", "language_model/shakespeare_w8_d1"):
        assert {f"curriculum/probability/{name}", f"curriculum/regret/{name}",
                f"curriculum/runs_started/{name}"} <= tags
    assert {"curriculum/family/image_mlp", "curriculum/family/language_model"} <= tags
    assert {"bucket_gradient_norm/image_mlp/digits_8_w8_d1", "bucket_gradient_norm/language_model/shakespeare_w8_d1"} <= tags
    last = {tag: events.Scalars(tag)[-1].value for tag in tags if tag.startswith("curriculum/")}
    started = [last[f"curriculum/runs_started/{name}"] for name in (
        "image_mlp/digits_8_w8_d1", "image_mlp/mnist_8_w8_d1", "language_model/shakespeare_w8_d1")]
    assert min(started) >= 10, started  # every config of the family, not the ones drawn at the start
    probabilities = [last[tag] for tag in last if tag.startswith("curriculum/probability/")]
    assert np.isclose(sum(probabilities), 1, atol=1e-5) and min(probabilities) >= 0.3 / 4 - 1e-6
    assert len(set(np.round(probabilities, 4))) > 1  # the regret moved them off uniform


@pytest.mark.slow
def test_a_mixed_run_resumed_from_an_earlier_checkpoint_ends_at_the_same_theta_and_curriculum(mixed_run, tmp_path):
    """The uninterrupted run cut back to its older kept checkpoint, as a kill after it leaves it (a real
    SIGKILL is tested in test_meta_train and test_distributed), then resumed: the curriculum state, the
    workers' configs and the baselines come back from disk."""
    uninterrupted, _ = mixed_run
    workdir = tmp_path / "cut"
    shutil.copytree(uninterrupted, workdir)
    shutil.rmtree(workdir / "optimizer")
    steps = sorted(int(path.name) for path in (workdir / "checkpoints").iterdir() if path.name.isdigit())
    assert len(steps) == 2, steps
    shutil.rmtree(workdir / "checkpoints" / str(steps[-1]))
    lines = []
    meta_train(mixed(), workdir, resume=True, compare=False, log=lines.append)
    assert f"resuming from the checkpoint at step {steps[0]}" in "\n".join(lines), lines
    assert not any(line.startswith("curriculum baseline") for line in lines), "the baselines were run again"
    jax.tree.map(np.testing.assert_array_equal, lopt.load_optimizer(workdir / "optimizer")[1],
                 lopt.load_optimizer(uninterrupted / "optimizer")[1])
    jax.tree.map(np.testing.assert_array_equal, _curriculum_arrays(workdir, mixed()),
                 _curriculum_arrays(uninterrupted, mixed()))
