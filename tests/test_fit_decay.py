"""The loss-aware weight decay (lopt.fit_decay): plain decay until the training loss has fallen past the
knee, then more; it reads the loss, and says so when it is not given."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt import fit_decay

PARAMS = {"w": jnp.full((3, 2), 2.0), "b": jnp.ones((2,))}
ZERO_GRADS = jax.tree.map(jnp.zeros_like, PARAMS)


def decay_after(losses, gain, offset=0.0, weight_decay=0.1):
    """The decay term (update / param) after the losses went by, with zero gradients."""
    transform = fit_decay.fit_decayed_weights(weight_decay, jnp.float32(gain), jnp.float32(offset))
    state = transform.init(PARAMS)
    for loss in losses:
        updates, state = transform.update(ZERO_GRADS, state, PARAMS, loss=jnp.float32(loss))
    return float(updates["w"][0, 0] / PARAMS["w"][0, 0])


def test_at_gain_0_it_is_optaxs_decoupled_weight_decay():
    transform = fit_decay.fit_decayed_weights(0.1, jnp.float32(0.0), jnp.float32(0.0))
    reference = optax.add_decayed_weights(0.1)
    grads = jax.tree.map(lambda p: 0.3 * p, PARAMS)
    ours, _ = transform.update(grads, transform.init(PARAMS), PARAMS, loss=jnp.float32(1e-9))
    theirs, _ = reference.update(grads, reference.init(PARAMS), PARAMS)
    jax.tree.map(np.testing.assert_allclose, ours, theirs)


def test_the_decay_grows_only_once_the_loss_has_fallen_past_the_knee():
    steady = [2.0] * 200  # a language model at its entropy floor
    memorized = [2.0] + [2.0 * np.exp(-11.0)] * 400  # 11 e-folds down: a memorized training set
    assert decay_after(steady, gain=1.0) == pytest.approx(0.1)
    grown = decay_after(memorized, gain=1.0)
    assert grown == pytest.approx(0.1 * np.exp(np.log1p(np.exp(11.0 - 4.0)) - np.log1p(np.exp(-4.0))), rel=1e-3)
    # The knee moves with theta's offset, and the response is the same at any scale of the loss.
    assert decay_after(memorized, gain=1.0, offset=3.0) < grown / 10
    assert decay_after([x * 1e4 for x in memorized], gain=1.0) == pytest.approx(grown, rel=1e-5)
    # Bounded either way: a huge gain stops at e^MAX_LOG_MULTIPLIER, a negative one lowers the decay.
    assert decay_after(memorized, gain=100.0) == pytest.approx(0.1 * np.exp(fit_decay.MAX_LOG_MULTIPLIER), rel=1e-4)
    assert decay_after(memorized, gain=-100.0) == pytest.approx(0.1 * np.exp(-fit_decay.MAX_LOG_MULTIPLIER), rel=1e-4)
    assert decay_after(memorized, gain=-0.1) == pytest.approx(0.1 * np.exp(-0.1 * np.log(grown / 0.1)), rel=1e-4)


def test_losses_with_no_ratio_get_plain_decay():
    assert decay_after([-1.0, -5.0, -9.0], gain=5.0) == pytest.approx(0.1)  # a log-likelihood below 0
    assert decay_after([2.0, float("nan"), 1e-9], gain=5.0) == pytest.approx(0.1)  # a diverged run


def test_the_optimizer_with_it_starts_as_the_shipped_one_and_asks_for_the_loss():
    shipped, theta, _ = lopt.load_optimizer(lopt.DEFAULT, fit_decay=False)
    with_it = dataclasses.replace(shipped, fit_decay=True, initial_fit_gain=0.0)
    started = {**theta, "fit_decay": with_it.init(jax.random.key(0))["fit_decay"]}
    grads = jax.tree.map(lambda p: 0.01 * jnp.ones_like(p), PARAMS)
    ours, theirs = with_it.transform(started, 10), shipped.transform(theta, 10)
    a_state, b_state = ours.init(PARAMS), theirs.init(PARAMS)
    for loss in (2.0, 1e-3, 1e-6):
        a, a_state = ours.update(grads, a_state, PARAMS, loss=jnp.float32(loss))
        b, b_state = theirs.update(grads, b_state, PARAMS, loss=jnp.float32(loss))
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5), a, b)
    with pytest.raises(ValueError, match="reads the training loss: call update\\(grads, state, params, loss=loss\\)"):
        ours.update(grads, a_state, PARAMS)


@pytest.mark.parametrize("settings", [{}, {"conv_step": 1.0, "embedding_step": 1.0}])
def test_a_training_loop_may_donate_the_optimizers_state(settings):
    """Each state leaf its own buffer: jit(update, donate_argnums=state) refuses a buffer donated twice."""
    transform = lopt.load(lopt.DEFAULT, num_steps=10, **settings)
    update = jax.jit(lambda grads, state, params: transform.update(grads, state, params, loss=jnp.float32(2.0)),
                     donate_argnums=1)
    state = transform.init(PARAMS)
    for _ in range(2):
        updates, state = update(jax.tree.map(jnp.ones_like, PARAMS), state, PARAMS)
    assert all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree.leaves(updates))
