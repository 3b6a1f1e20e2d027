"""Shared helpers for the learned-optimizer tests."""

import jax
import jax.numpy as jnp
import numpy as np

import lopt


def normalized_descent_theta(optimizer: lopt.MLPLOpt, step_size: float):
    """An MLPLOpt theta whose update is -step_size * g / rms(g) per tensor: hidden unit 0 carries the
    normalized gradient feature (input 0), unit 1 its negative, the direction is their difference and
    the magnitude bias sets exp(m * exp_mult) * step_mult = step_size."""
    theta = optimizer.init(jax.random.key(0))
    layers = {}
    sizes = [optimizer.num_inputs] + [optimizer.hidden_size] * optimizer.hidden_layers + [2]
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weight = np.zeros((fan_in, fan_out), np.float32)
        bias = np.zeros((fan_out,), np.float32)
        if index == 0:
            weight[0, 0], weight[0, 1] = 1.0, -1.0
        elif index < len(sizes) - 2:
            weight[0, 0], weight[1, 1] = 1.0, 1.0
        else:
            weight[0, 0], weight[1, 0] = 1.0, -1.0
            bias[1] = np.log(step_size / optimizer.step_mult) / optimizer.exp_mult
        layers[f"layer_{index}"] = {"w": jnp.asarray(weight), "b": jnp.asarray(bias)}
    return {**theta, "mlp": layers}


# One small instance of every architecture; the shared tests run over all of them.
EVERY_ARCHITECTURE = {
    "mlp_lopt": lopt.MLPLOpt(hidden_size=4),
    "lstm_lopt": lopt.LSTMLOpt(lstm_hidden_size=8, num_mlps=4),
    "mu_adam": lopt.Adam(parameterization="mup"),
    "momentum_mlp_lopt": lopt.MomentumMLPLOpt(hidden_size=4, parameterization="mup"),
    "velo": lopt.VeLO(lstm_hidden_size=8, num_mlps=4, parameterization="mup"),
    # No weight decay, so that muP's hidden steps / fan_in is all that sets the two parameterizations apart.
    "normalized_mlp": lopt.NormalizedMLPLOpt(hidden_size=4, parameterization="mup", orthogonalize=False,
                                             initial_weight_decay=0.0),
}
