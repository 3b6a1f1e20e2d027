"""The hand-designed optimizers practitioners tune, each an Optax transform of (learning rate, run length,
muP roles) with the learning-rate grid it is tuned over: the one definition that evaluate's sweeps and
meta_train's end-of-run comparison both use.
"""

from __future__ import annotations

import json
from typing import Callable

import jax.numpy as jnp
import optax

from lopt.hand_designed import Adam
from lopt.harness import WARMUP_FRACTION, muon_dimension_numbers, warmup_decay

# Learning-rate grids, half a decade apart (8 each), wide enough that the best value lies inside on
# the registered tasks; a best value at either end is flagged in the results.
ADAM_LEARNING_RATES = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
# muAdam divides hidden-layer steps by their fan-in, so its base learning rate sits higher.
MUADAM_LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
SGD_LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
# Muon's steps at consistent RMS 0.2 (below) are smaller per unit of rate than Adam's: half a decade up.
MUON_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
ADAMW_WEIGHT_DECAY = 1e-2  # decoupled, as PyTorch's AdamW default
SGD_MOMENTUM = 0.9
# Muon's orthogonalized steps are rescaled to about the RMS of AdamW's (Moonshot's consistent-RMS rule,
# the 0.2 optax recommends), so one learning rate serves its matrices and the Adam-trained rest.
MUON_CONSISTENT_RMS = 0.2



# The baselines a practitioner tunes today, as tables and logs name them: constant-rate Adam, and
# warmup-cosine AdamW and Muon. Evaluation counts wins against each; meta-training's end compares with them.
PRACTITIONER_BASELINES = {"adam": "Adam", "adamw_cosine": "AdamW-cosine", "muon": "Muon"}


def warmup_adamw(shape: str, weight_decay: float = ADAMW_WEIGHT_DECAY):
    """make(rate, num_steps, roles) of AdamW with warmup then `shape` ("cosine" or "linear") decay: the
    adamw_cosine and adamw_linear baselines, and the self-tuning track's AdamW at another weight decay."""
    return lambda rate, num_steps, roles: optax.adamw(warmup_decay(shape, rate, num_steps),
                                                      weight_decay=weight_decay)


def _muon(shape):
    def make(rate, num_steps, roles):
        return optax.contrib.muon(warmup_decay(shape, rate, num_steps), weight_decay=ADAMW_WEIGHT_DECAY,
                                  adam_weight_decay=ADAMW_WEIGHT_DECAY, consistent_rms=MUON_CONSISTENT_RMS,
                                  muon_weight_dimension_numbers=muon_dimension_numbers(roles))
    return make


def _muon_setting(shape):
    return (f"optax.contrib.muon(beta=0.95, nesterov, ns_steps=5, consistent_rms={MUON_CONSISTENT_RMS!r}, "
            f"weight_decay={ADAMW_WEIGHT_DECAY!r}, adam_weight_decay={ADAMW_WEIGHT_DECAY!r}) on hidden "
            f"matrices, warmup {WARMUP_FRACTION!r} then {shape} to 0")


def _adamw_setting(shape):
    return (f"optax.adamw(b1=0.9, b2=0.999, eps=1e-8, weight_decay={ADAMW_WEIGHT_DECAY!r}), "
            f"warmup {WARMUP_FRACTION!r} then {shape} to 0")


def _muadam(hyper, num_steps, roles):
    return Adam(parameterization="mup").transform(
        {**Adam().init(None), "log_learning_rate": jnp.log(hyper)}, num_steps, roles)


# name: (make, default grid, model parameterization, every setting besides the learning rate: part of
# the cache key, so a changed default never returns results of the old one)
BASELINES: dict[str, tuple[Callable, tuple[float, ...], str, str]] = {
    "adam": (lambda rate, num_steps, roles: optax.adam(rate), ADAM_LEARNING_RATES, "sp",
             "optax.adam(b1=0.9, b2=0.999, eps=1e-8)"),
    "adamw": (lambda rate, num_steps, roles: optax.adamw(rate, weight_decay=ADAMW_WEIGHT_DECAY),
              ADAM_LEARNING_RATES, "sp", f"optax.adamw(b1=0.9, b2=0.999, eps=1e-8, weight_decay={ADAMW_WEIGHT_DECAY!r})"),
    "adamw_cosine": (warmup_adamw("cosine"), ADAM_LEARNING_RATES, "sp", _adamw_setting("cosine")),
    "adamw_linear": (warmup_adamw("linear"), ADAM_LEARNING_RATES, "sp", _adamw_setting("linear")),
    "muon": (_muon("cosine"), MUON_LEARNING_RATES, "sp", _muon_setting("cosine")),
    "muon_linear": (_muon("linear"), MUON_LEARNING_RATES, "sp", _muon_setting("linear")),
    "muadam": (_muadam, MUADAM_LEARNING_RATES, "mup", json.dumps(Adam(parameterization="mup").spec(),
                                                                  sort_keys=True)),
    "sgdm": (lambda rate, num_steps, roles: optax.sgd(rate, momentum=SGD_MOMENTUM), SGD_LEARNING_RATES, "sp",
             f"optax.sgd(momentum={SGD_MOMENTUM!r}, nesterov=False)"),
}
BASELINE_DESCRIPTIONS = {
    "adam": f"Adam, learning rate tuned over {len(ADAM_LEARNING_RATES)} values "
            f"{ADAM_LEARNING_RATES[0]:g}-{ADAM_LEARNING_RATES[-1]:g}",
    "adamw": f"AdamW (weight decay {ADAMW_WEIGHT_DECAY:g}), the same grid as Adam",
    "adamw_cosine": f"AdamW (weight decay {ADAMW_WEIGHT_DECAY:g}), linear warmup over {WARMUP_FRACTION:.0%} of "
                    "the run, cosine decay to 0; the same grid as Adam",
    "adamw_linear": "adamw_cosine with linear decay to 0 in place of cosine",
    "muon": f"Muon (optax.contrib.muon) on the hidden matrices, AdamW on the rest, warmup-cosine; "
            f"{len(MUON_LEARNING_RATES)} values {MUON_LEARNING_RATES[0]:g}-{MUON_LEARNING_RATES[-1]:g}",
    "muon_linear": "muon with linear decay to 0 in place of cosine",
    "muadam": f"muAdam (Adam with hidden steps / fan_in), {len(MUADAM_LEARNING_RATES)} values "
              f"{MUADAM_LEARNING_RATES[0]:g}-{MUADAM_LEARNING_RATES[-1]:g}",
    "sgdm": f"SGD with momentum {SGD_MOMENTUM:g}, {len(SGD_LEARNING_RATES)} values "
            f"{SGD_LEARNING_RATES[0]:g}-{SGD_LEARNING_RATES[-1]:g}",
}
