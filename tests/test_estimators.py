"""The estimators' defining properties on a problem whose exact meta-gradient jax.grad can compute:
Adam with learnable log learning rate and betas on a deterministic quadratic, over several truncations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
import tasks
from meta_train.estimators import PES, ESSingle, TruncatedBackprop, TruncatedES
from meta_train.truncation import ConstantLength
from meta_train.unroll import Unroller
from tasks.train import train_step

TRUNCATION = 8
RUN_LENGTH = 40  # 5 truncations a run
SHORT_RUN_LENGTH = 4  # two resets in every truncation, one at its last step
STRADDLING_RUN_LENGTH = 12  # runs that begin inside a truncation and go on into the next
MEASURED_TRUNCATION = 3  # the estimate taken at the 3rd truncation, whose start theta has shaped
NUM_TASKS = 64
REPEATS = 24
SIGMA = 0.01


@pytest.fixture(scope="module")
def problem():
    task = tasks.get_task("quadratic_10d", dim=4, condition_number=10.0)
    optimizer = lopt.Adam(learning_rate=0.05)
    theta = optimizer.init(None)
    return task, optimizer, theta


def unroller(problem, particles, run_length=RUN_LENGTH):
    task, optimizer, _ = problem
    # A huge cap: the test needs the smooth objective, no clipping.
    return Unroller(task, optimizer, ConstantLength(run_length), num_particles=particles, max_meta_loss=1e9)


def exact_gradient(problem, init_key, run_length=RUN_LENGTH):
    """jax.grad of the measured truncation's mean loss through every run from the start."""
    task, _, theta = problem
    estimator = TruncatedBackprop(unroller(problem, 1, run_length), NUM_TASKS, TRUNCATION, stagger=False)
    workers = estimator._init_workers(theta, init_key, 1)
    steps = TRUNCATION * MEASURED_TRUNCATION

    def measured_loss(theta):
        thetas = jax.tree.map(lambda t: jnp.broadcast_to(t, (NUM_TASKS, 1) + t.shape), theta)
        _, truncation = estimator.unroller.unroll_workers(thetas, workers, estimator.unroller.data, steps)
        return jnp.mean(truncation.meta_losses[:, :, -TRUNCATION:])

    return jax.jit(jax.grad(measured_loss))(theta)


def repeated_estimates(problem, estimator_type, init_key, run_length=RUN_LENGTH):
    task, _, theta = problem
    estimator = estimator_type(unroller(problem, 2, run_length), NUM_TASKS, TRUNCATION, SIGMA, stagger=False)

    @jax.jit
    def measured_estimate(repeat_key):
        state = estimator.init(theta, init_key)  # the same tasks as the exact gradient
        for index in range(MEASURED_TRUNCATION):
            meta_grad, state, _ = estimator.estimate(theta, state, estimator.unroller.data, jax.random.fold_in(repeat_key, index))
        return meta_grad

    return [measured_estimate(jax.random.key(100 + r)) for r in range(REPEATS)]


def z_scores(estimates, exact):
    """(mean estimate - exact) / standard error, per meta-parameter."""
    scores = {}
    for name in exact:
        samples = np.array([float(e[name]) for e in estimates])
        scores[name] = (samples.mean() - float(exact[name])) / (samples.std(ddof=1) / np.sqrt(len(samples)))
    return scores


def test_pes_is_unbiased_and_truncated_es_is_not(problem):
    init_key = jax.random.key(7)
    exact = exact_gradient(problem, init_key)
    pes = z_scores(repeated_estimates(problem, PES, init_key), exact)
    truncated = z_scores(repeated_estimates(problem, TruncatedES, init_key), exact)
    # PES matches the exact gradient within its standard error; truncated ES misses the learning rate's
    # effect on where the truncation starts, by many standard errors.
    print("z-scores, PES:", pes, "truncated ES:", truncated)
    assert all(abs(z) < 4.0 for z in pes.values()), pes
    assert abs(truncated["log_learning_rate"]) > 8.0, truncated
    assert abs(float(exact["log_learning_rate"])) > 1e-3


@pytest.mark.parametrize("estimator_type,run_length,seed", [
    # Runs of 4 steps in truncations of 8: PES's accumulator restarts mid-truncation and at its end.
    (PES, SHORT_RUN_LENGTH, 8),
    # Runs of 12: a run that begins inside a truncation carries into ES-Single's next one the perturbation
    # it began under as well as the one it keeps for the rest of it (that it keeps one is the next test).
    (ESSingle, STRADDLING_RUN_LENGTH, 9)])
def test_unbiased_where_runs_begin_inside_a_truncation(problem, estimator_type, run_length, seed):
    init_key = jax.random.key(seed)
    exact = exact_gradient(problem, init_key, run_length)
    scores = z_scores(repeated_estimates(problem, estimator_type, init_key, run_length), exact)
    print(f"z-scores, {estimator_type.__name__} with resets:", scores)
    assert all(abs(z) < 4.0 for z in scores.values()), scores
    assert abs(float(exact["log_learning_rate"])) > 1e-3


def test_es_single_keeps_a_runs_perturbation_until_it_ends(problem):
    """Over a 40-step run in truncations of 8 the estimator perturbs with one eps; it draws another
    only for the truncation after the run's last step."""
    _, _, theta = problem
    estimator = ESSingle(unroller(problem, 2), 2, TRUNCATION, SIGMA, stagger=False)
    state = estimator.init(theta, jax.random.key(0))
    estimate = jax.jit(estimator.estimate)
    drawn = []
    for index in range(RUN_LENGTH // TRUNCATION + 1):
        _, state, _ = estimate(theta, state, estimator.unroller.data, jax.random.key(index))
        drawn.append(np.asarray(state.accumulator[0]))
    for index in range(1, RUN_LENGTH // TRUNCATION):
        np.testing.assert_array_equal(drawn[index], drawn[0])
    assert not np.any(drawn[-1] == drawn[0])
    assert not np.any(np.asarray(state.accumulator[1]))  # the new run began at a truncation's start


def test_truncated_backprop_is_jax_grad_of_the_truncation(problem):
    """Against a plain Python loop of inner steps from the same state, differentiated by jax.grad."""
    task, optimizer, theta = problem
    estimator = TruncatedBackprop(unroller(problem, 1), 3, TRUNCATION, stagger=False)
    state = estimator.init(theta, jax.random.key(3))
    # Move the workers into their runs first, so the truncation starts from a trained state.
    _, state, _ = jax.jit(estimator.estimate)(theta, state, estimator.unroller.data, jax.random.key(4))
    meta_grad, _, _ = jax.jit(estimator.estimate)(theta, state, estimator.unroller.data, jax.random.key(5))

    def reference_loss(theta):
        total = 0.0
        for index in range(3):
            worker = jax.tree.map(lambda x: x[index], state.workers)
            params = jax.tree.map(lambda x: x[0], worker.params)
            opt_state = jax.tree.map(lambda x: x[0], worker.opt_state)
            transform = optimizer.transform(theta, worker.length)
            step = worker.step
            for _ in range(TRUNCATION):
                assert int(step) < int(worker.length)  # no reset inside: a plain loop suffices
                key = jax.random.fold_in(worker.run_key, step + 1)
                params, opt_state, loss = train_step(task, transform, params, opt_state, task.data, key)
                total += task.normalize_loss(loss)
                step = step + 1
        return total / (3 * TRUNCATION)

    expected = jax.grad(reference_loss)(theta)
    for name in theta:
        np.testing.assert_allclose(meta_grad[name], expected[name], rtol=1e-4, atol=1e-7, err_msg=name)


def test_diverging_inner_runs_are_capped_counted_and_restarted():
    """An optimizer that overflows the loss to inf: the meta-loss sees the cap, the runs restart, and
    the meta-gradient stays finite."""
    task = tasks.get_task("quadratic_10d", dim=4, condition_number=10.0)
    optimizer = lopt.Adam(learning_rate=1e30)
    theta = optimizer.init(None)
    estimator = PES(Unroller(task, optimizer, ConstantLength(RUN_LENGTH), num_particles=2, max_meta_loss=3.0),
                    4, TRUNCATION, SIGMA)
    state = estimator.init(theta, jax.random.key(0))
    estimate = jax.jit(estimator.estimate)
    raw_losses = []
    for index in range(2):
        meta_grad, state, metrics = estimate(theta, state, (task.data,), jax.random.key(index))
        raw_losses.append(float(metrics["train_loss"]))
        assert float(metrics["diverged_fraction"]) >= 0.5  # every run diverges at its second step
        assert float(metrics["meta_loss"]) <= 3.0
        assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves((meta_grad, state.workers.params)))
    assert not all(np.isfinite(raw_losses)), "the optimizer was meant to overflow the loss"
