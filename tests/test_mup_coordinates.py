"""The muP coordinate check (Yang et al., Tensor Programs V): after a few steps of a fixed-learning-rate
update, activation and logit scales stay flat across width under muP and grow with width under standard
parameterization."""

import jax
import jax.numpy as jnp
import optax
import pytest

import tasks
from tasks.models import fan_in

WIDTHS = {"mlp_mnist_8x8": (64, 128, 256, 512), "transformer_shakespeare": (32, 64, 128, 256)}
SMALL = {"mlp_mnist_8x8": dict(batch_size=64), "transformer_shakespeare": dict(depth=1, sequence_length=16, batch_size=4)}
# The layers whose outputs must grow with width in SP: the readout's logits and, for the transformer, the
# residual stream after the block; minimum growth from the narrowest to the widest model (measured: 4.2x
# for the MLP logits, 15x for the transformer block output, 1.5x for its logits after the final norm).
SP_GROWTH = {"mlp_mnist_8x8": {"readout": 2.0},
             "transformer_shakespeare": {"block_0": 3.0, "readout": 1.2}}
MUP_MAX_SPREAD = 1.35  # largest / smallest RMS across widths, every layer (measured at most 1.1)
# (learning rate, steps): large enough that SP's growth shows, small enough that Adam does not oscillate.
SCHEDULE = {"mlp_mnist_8x8": (3e-3, 3), "transformer_shakespeare": (2e-2, 5)}


def mu_adam(learning_rate, roles):
    """Adam with hidden-tensor updates divided by fan_in: the muP rule for Adam-like optimizers."""
    scale_hidden = optax.stateless(lambda updates, params: jax.tree.map(
        lambda update, role: update / fan_in(update) if role == "hidden" else update, updates, roles))
    return optax.chain(optax.adam(learning_rate), scale_hidden)


def layer_output_rms(task_name, width, parameterization):
    task = tasks.get_task(task_name, width=width, parameterization=parameterization, **SMALL[task_name])
    key = jax.random.key(0)
    params = task.init(key)
    roles = task.roles(params)
    learning_rate, steps = SCHEDULE[task_name]
    optimizer = mu_adam(learning_rate, roles) if parameterization == "mup" else optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    batch = task.batch(task.data, jax.random.key(1))
    inputs = batch[0] if isinstance(batch, tuple) else batch["tokens"][:, :-1]  # (inputs, targets) or tokens

    @jax.jit
    def train_and_measure(params, opt_state):
        def step(_, carry):
            params, opt_state = carry
            grads = jax.grad(task.loss)(params, batch, key)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        params, _ = jax.lax.fori_loop(0, steps, step, (params, opt_state))
        model = task.loss_fn.module if isinstance(task, tasks.ArrayTask) else task.model
        _, state = model.apply({"params": params}, inputs, capture_intermediates=True,
                                    mutable=["intermediates"])
        # Each top-level module's output (for the transformer: embeddings, each block, the logits).
        return {name: jnp.sqrt(jnp.mean(jnp.square(outputs["__call__"][0])))
                for name, outputs in state["intermediates"].items() if name != "__call__"}

    return jax.tree.map(float, train_and_measure(params, opt_state))


# The transformer's four widths take most of a minute: its case runs with the slow tests.
@pytest.mark.parametrize("task_name", ["mlp_mnist_8x8", pytest.param("transformer_shakespeare", marks=pytest.mark.slow)])
def test_coordinates_flat_in_mup_and_growing_in_sp(task_name):
    widths = WIDTHS[task_name]
    mup = {width: layer_output_rms(task_name, width, "mup") for width in widths}
    sp = {width: layer_output_rms(task_name, width, "sp") for width in (widths[0], widths[-1])}  # growth: the ends
    for layer in mup[widths[0]]:
        scales = [mup[width][layer] for width in widths]
        assert max(scales) / min(scales) < MUP_MAX_SPREAD, (layer, scales)
    for layer, min_growth in SP_GROWTH[task_name].items():
        scales = [sp[width][layer] for width in sp]
        assert scales[-1] / scales[0] > min_growth, (layer, scales)
