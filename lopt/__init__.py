"""Learned optimizers: architectures, muP rules, hand-designed baselines and the Optax adapter.

    tx = lopt.load(lopt.DEFAULT, num_steps=1000)  # a shipped name or a checkpoint directory
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params, loss=loss)
    params = optax.apply_updates(params, updates)
"""

from lopt import baselines, harness
from lopt.base import LearnedOptimizer, StepRule
from lopt.hand_designed import Adam
from lopt.harness import muon_dimension_numbers
from lopt.loading import (DEFAULT, FORMER_NAMES, PretrainedInfo, check_theta, convert_learned_optimization,
                          list_pretrained, load, load_optimizer, load_rule, refit_theta, save)
from lopt.lstm_lopt import LSTMLOpt
from lopt.mlp_lopt import MLPLOpt
from lopt.momentum_mlp_lopt import MomentumMLPLOpt
from lopt.normalized_mlp import NormalizedMLPLOpt
from lopt.mup import RolesError, check_roles, infer_roles, scale_updates
from lopt.registry import ARCHITECTURES, SpecError, from_spec
from lopt.types import MetaParams, Params, Roles
from lopt.velo import VeLO
