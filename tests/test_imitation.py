"""Expert supervision: the exact gradient of the rule's imitation loss beside the meta-gradient estimate."""

import jax
import numpy as np
import pytest

import lopt

from meta_train.config import ConfigError, MetaTrainConfig, preset, with_overrides
from meta_train.trainer import MetaTrainer
from tests import own_family

# A one-hidden-matrix MLP family of a user's own, all of theta meta-trained, seconds per run.
SMALL = ["task_family=tests.own_family:MLP_FAMILY", "num_task_configs=1", "workers_per_config=2",
         "truncation_length=4", "min_inner_length=20", "max_inner_length=40", "meta_train_only=",
         "optimizer.hidden_size=4", "outer_warmup_steps=0", "outer_steps=20"]


def run(*changes: str, steps: int = 20):
    trainer = MetaTrainer(with_overrides(preset("default"), SMALL + list(changes)), family=own_family.MLP_FAMILY)
    state, data = trainer.init(), trainer.data()
    metrics = []
    for _ in range(steps):
        state, step_metrics = trainer.step(state, data)
        metrics.append(jax.device_get(step_metrics))
    return trainer, state, metrics


@pytest.mark.slow
def test_imitating_adam_pulls_a_displaced_rule_back_and_a_zero_weight_changes_nothing(tmp_path):
    # The MLP moved away from its start, Adam's direction, which it can reach again when nothing is
    # orthogonalized; a weight that dominates the clipped meta-gradient. Measured at the same worker
    # states and batches, before and after.
    optimizer = with_overrides(preset("default"), SMALL + ["optimizer.orthogonalize=false"]).optimizer
    displaced = jax.device_get(optimizer.init(jax.random.key(0)))
    displaced["mlp"] = jax.tree.map(lambda w: w + 0.5 * np.asarray(jax.random.normal(jax.random.key(2), w.shape)),
                                    displaced["mlp"])
    lopt.save(tmp_path / "displaced", optimizer, displaced, description="a test's start")
    trainer, state, metrics = run("expert=adam", "imitation_weight=1000", "imitation_decay_from=1",
                                  "imitation_decay_to=1", "outer_learning_rate=0.01", "optimizer.orthogonalize=false",
                                  f"init_from={tmp_path / 'displaced'}")
    assert all(float(m["imitation_weight"]) == 1000 for m in metrics)
    unroller, workers = trainer.estimators[0].unroller, state.estimator_states[0].workers
    data = trainer.data()[0]
    loss = lambda theta: float(unroller.imitation_loss(theta, workers, data, jax.random.key(0), "adam"))  # noqa: E731
    assert loss(state.theta) < 0.5 * loss(trainer.start_theta), (loss(state.theta), loss(trainer.start_theta))
    _, plain, plain_metrics = run(steps=3)
    _, unweighted, unweighted_metrics = run("expert=muon", "imitation_weight=0", steps=3)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(plain.theta), jax.device_get(unweighted.theta))
    assert "imitation_loss" not in plain_metrics[0] and "imitation_loss" in unweighted_metrics[0]


def test_the_imitation_weight_holds_then_falls_linearly_to_zero():
    trainer, _, _ = run("expert=adam", "imitation_weight=2", "imitation_decay_from=0.25", "imitation_decay_to=0.75",
                        "outer_steps=100", steps=0)
    weights = [float(trainer.imitation_weight(step)) for step in (0, 25, 50, 75, 99)]
    np.testing.assert_allclose(weights, [2.0, 2.0, 1.0, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("changes,message", [
    (["expert=sgd"], "expert='sgd': must be one of none, muon, adam"),
    (["expert=muon", "optimizer=mlp_lopt"], "the mlp_lopt optimizer has no imitation loss"),
    (["expert=muon", "estimator=full_es"], "needs workers whose runs go on between outer steps"),
    (["imitation_decay_from=0.8", "imitation_decay_to=0.5"], "imitation_decay_from=0.8: must satisfy"),
    (["imitation_weight=-1"], "imitation_weight=-1.0: must be non-negative"),
])
def test_bad_expert_settings_are_refused_in_one_line(changes, message):
    with pytest.raises(ConfigError, match=message):
        with_overrides(MetaTrainConfig(), changes)
