"""lopt.load as a practitioner calls it: one shipped default with load-time settings, the former names."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt

PARAMS = {"dense": {"kernel": jnp.full((6, 4), 0.1), "bias": jnp.zeros(4)}, "readout": {"kernel": jnp.full((4, 3), 0.1)}}


def _updates(transform, steps: int, loss: float = 2.0):
    grads, update = jax.tree.map(jnp.ones_like, PARAMS), jax.jit(transform.update)  # eager dispatch is slower
    state, out = transform.init(PARAMS), []
    for _ in range(steps):
        updates, state = update(grads, state, PARAMS, loss=jnp.float32(loss))
        out.append(updates)
    return out


def test_a_setting_is_an_argument_of_load_not_another_checkpoint():
    default, theta, _ = lopt.load_optimizer(lopt.DEFAULT)
    linear, linear_theta, _ = lopt.load_optimizer(lopt.DEFAULT, schedule="linear", learning_rate_scale=0.5)
    assert (linear.schedule, linear.learning_rate_scale) == ("linear", 0.5)
    jax.tree.map(np.testing.assert_array_equal, theta, linear_theta)  # the same theta
    assert float(linear.peak_learning_rate(theta)) == pytest.approx(0.5 * float(default.peak_learning_rate(theta)))
    halved = _updates(lopt.load(lopt.DEFAULT, num_steps=20, learning_rate_scale=0.5), 3)[-1]
    full = _updates(lopt.load(lopt.DEFAULT, num_steps=20), 3)[-1]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, 0.5 * b, rtol=1e-5, atol=1e-9), halved, full)
    no_decay, _, _ = lopt.load_optimizer(lopt.DEFAULT, weight_decay=0.0)
    assert float(no_decay.decoupled_weight_decay(theta)) == 0.0


def test_fit_decay_off_drops_its_theta_entry_and_the_update_no_longer_needs_the_loss():
    optimizer, theta, _ = lopt.load_optimizer(lopt.DEFAULT, fit_decay=False)
    assert "fit_decay" not in theta and not optimizer.fit_decay
    tx = lopt.load(lopt.DEFAULT, num_steps=10, fit_decay=False)
    updates, _ = tx.update(PARAMS, tx.init(PARAMS), PARAMS)  # no loss=
    assert all(bool(jnp.isfinite(u).all()) for u in jax.tree.leaves(updates))


def test_a_setting_that_shapes_theta_or_does_not_exist_is_refused_in_one_line():
    with pytest.raises(lopt.SpecError, match=r"hidden_size shapes theta, fixed by the checkpoint; settings that may "
                                             r"change: schedule, learning_rate_scale"):
        lopt.load(lopt.DEFAULT, num_steps=10, hidden_size=4)
    with pytest.raises(lopt.SpecError, match="has no setting warmup"):
        lopt.load(lopt.DEFAULT, num_steps=10, warmup=3)
    with pytest.raises(lopt.SpecError, match="schedule='step': one of cosine, linear"):
        lopt.load(lopt.DEFAULT, num_steps=10, schedule="step")


@pytest.mark.parametrize("former, settings", [
    ("orthogonal_mixed_kinds", {}),
    ("orthogonal_mixed_linear", {"schedule": "linear"}),
    ("orthogonal_mixed_fit", {"conv_step": 1.0, "embedding_step": 1.0}),
    ("orthogonal_mixed", {"conv_step": 1.0, "embedding_step": 1.0, "fit_decay": False}),
])
def test_every_former_name_loads_as_the_default_with_its_settings_and_says_so(former, settings):
    with pytest.warns(FutureWarning, match=f"'{former}' is now lopt.load\\('{lopt.DEFAULT}'"):
        optimizer, theta, _ = lopt.load_optimizer(former)
    expected, expected_theta, _ = lopt.load_optimizer(lopt.DEFAULT, **settings)
    assert optimizer == expected
    jax.tree.map(np.testing.assert_array_equal, theta, expected_theta)


@pytest.mark.parametrize("former, now", [("mulo_small_fc", "mulo"), ("normalized_mixed", "former/normalized_mixed"),
                                         ("sp_small_fc", "former/sp_small_fc")])
def test_the_other_former_names_still_load(former, now):
    with pytest.warns(FutureWarning, match=now):
        optimizer, _, _ = lopt.load_optimizer(former)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lopt.load_optimizer(now)[0] == optimizer
    assert former not in {info.name for info in lopt.list_pretrained()}  # listed: the names to choose between


def test_past_num_steps_the_learning_rate_stays_zero_and_params_stop_moving():
    updates = _updates(lopt.load(lopt.DEFAULT, num_steps=5), 8)
    assert any(float(jnp.abs(u).max()) > 0 for u in jax.tree.leaves(updates[2]))
    for late in updates[4:]:  # step num_steps - 1 is the schedule's 0, and it stays there
        assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(late))


def test_the_default_drops_into_an_optax_training_loop():
    tx = lopt.load(lopt.DEFAULT, num_steps=30)
    target = jax.tree.map(lambda p: jnp.zeros_like(p) + 0.5, PARAMS)

    def loss_fn(params):
        return sum(jnp.mean((p - t) ** 2) for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(target)))

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params, loss=loss)
        return optax.apply_updates(params, updates), state, loss

    params, state = PARAMS, tx.init(PARAMS)
    first = float(loss_fn(params))
    for _ in range(30):
        params, state, _ = step(params, state)
    assert float(loss_fn(params)) < 0.7 * first
