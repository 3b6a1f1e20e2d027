"""A user's own model and arrays as tasks and task families (tasks.from_flax, from_functions, family),
used the way a user calls them."""

import math

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tasks

NUM_FEATURES, NUM_CLASSES = 4, 3


class MLP(nn.Module):
    width: int = 8

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.width)(x))
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(NUM_CLASSES)(x)


def classification_data(num_examples, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, NUM_FEATURES)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32)  # labels 0, 1, 2


def mlp_task(width=8, seed=0, name="mlp"):
    return tasks.from_flax(MLP(width), classification_data(48, seed), classification_data(12, seed + 100),
                           loss="cross_entropy", batch_size=8, name=name)


@pytest.fixture(scope="module")
def task():
    return mlp_task()


def linear_init(key):
    return {"w": 0.1 * jax.random.normal(key, (NUM_FEATURES, 1)), "b": jnp.zeros((1,))}


def linear_loss(params, batch, key):
    del key
    x, y = batch
    error = (x @ params["w"])[:, 0] + params["b"][0] - y
    return jnp.mean(jnp.square(error)), {"max_error": jnp.max(jnp.abs(error))}


def regression_data(num_examples, seed=0):
    x = np.random.default_rng(seed).normal(size=(num_examples, NUM_FEATURES)).astype(np.float32)
    return x, x @ np.arange(1.0, NUM_FEATURES + 1, dtype=np.float32)


def test_flax_task_starts_near_uniform_and_normalizes_to_one(task, key):
    params = task.init(key)
    loss, aux = jax.jit(task.loss_and_aux)(params, task.held_out(task.data), key)
    assert abs(float(loss) - math.log(NUM_CLASSES)) < 0.3
    assert 0 <= aux["accuracy"] <= 1
    assert float(task.normalize_loss(loss)) == pytest.approx(1.0, abs=0.3)


def test_flax_task_batches_are_drawn_on_device_and_held_out_is_fixed(task, key):
    batch = jax.jit(task.batch, static_argnames="split")(task.data, key)
    assert [a.shape for a in batch] == [(8, NUM_FEATURES), (8,)]
    valid = task.held_out(task.data)
    assert valid[0].shape == (12, NUM_FEATURES)  # a small split is held out whole
    np.testing.assert_array_equal(task.held_out(task.data)[0], valid[0])
    with pytest.raises(tasks.TaskError, match="'mlp' has no 'test' split"):
        task.batch(task.data, key, "test")


def test_flax_task_roles_follow_mup(task, key):
    roles = task.roles(task.init(key))
    assert roles["Dense_0"] == {"kernel": "input", "bias": "input"}
    assert roles["Dense_1"] == {"kernel": "hidden", "bias": "input"}
    assert roles["Dense_2"] == {"kernel": "output", "bias": "input"}
    assert task.roles(jax.eval_shape(task.init, key)) == roles  # shapes in sorted order give the same


def test_flax_task_trains_with_adam(task, key):
    optimizer = optax.adam(3e-2)

    @jax.jit
    def step(params, opt_state, data, key):
        batch_key, loss_key = jax.random.split(key)
        loss, grads = jax.value_and_grad(task.loss)(params, task.batch(data, batch_key), loss_key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = task.init(key)
    opt_state = optimizer.init(params)
    train = task.held_out(task.data, "train")  # all 48 training examples
    start = task.loss(params, train, key)
    for index in range(20):
        params, opt_state, _ = step(params, opt_state, task.data, jax.random.fold_in(key, index))
    assert task.loss(params, train, key) < 0.8 * start


def test_from_functions_with_aux_and_explicit_roles(key):
    task = tasks.from_functions(linear_init, linear_loss, regression_data(32), regression_data(8, seed=1),
                                batch_size=4, name="linear", test=regression_data(8, seed=2))
    loss, aux = task.loss_and_aux(task.init(key), task.batch(task.data, key, "test"), key)
    assert set(aux) == {"max_error"} and loss.shape == ()
    assert float(task.normalize_loss(task.loss(task.init(key), task.held_out(task.data), key))) == \
        pytest.approx(1.0, abs=0.5)
    # A linear model's kernel reads the data and grows with no width: "input", as lopt.infer_roles has it.
    assert task.roles(task.init(key)) == {"w": "input", "b": "input"}
    as_tree = tasks.from_functions(linear_init, linear_loss, regression_data(32), regression_data(8),
                                   batch_size=4, name="linear", roles={"w": "output", "b": "input"})
    as_callable = tasks.from_functions(linear_init, linear_loss, regression_data(32), regression_data(8),
                                       batch_size=4, name="linear",
                                       roles=lambda params: jax.tree.map(lambda _: "hidden", params))
    assert as_tree.roles(as_tree.init(key))["w"] == "output"
    assert as_callable.roles(as_callable.init(key)) == {"w": "hidden", "b": "hidden"}


def test_augmented_custom_task_keeps_the_function(task, key):
    augmentation = tasks.Augmentation(reparam="tensor", loss_scale_max=10.0)
    factors = augmentation.sample(key, jax.eval_shape(task.init, key))
    augmented = augmentation.apply(task, factors)
    batch = augmented.batch(augmented.data, key)

    @jax.jit
    def normalized_losses(key):
        return (augmented.normalize_loss(augmented.loss(augmented.init(key), batch, key)),
                task.normalize_loss(task.loss(task.init(key), batch, key)),
                augmented.normalize_loss(augmented.eval_loss_and_aux(augmented.init(key), batch)[0]),
                task.normalize_loss(task.eval_loss_and_aux(task.init(key), batch)[0]))

    augmented_loss, plain_loss, augmented_eval, plain_eval = normalized_losses(key)
    assert float(augmented_loss) == pytest.approx(float(plain_loss), rel=1e-4)
    assert float(augmented_eval) == pytest.approx(float(plain_eval), rel=1e-4)  # its inference mode too


def test_family_buckets_tasks_by_shape_and_model(task):
    other_data = mlp_task(width=8, seed=1, name="mlp_other_data")
    wider = mlp_task(width=16, name="mlp_wide")
    family = tasks.family([task, other_data, wider], name="mine")
    assert [[config.name for config in bucket] for bucket in family.buckets] == \
        [["mlp", "mlp_other_data"], ["mlp_wide"]]
    assert family.sample_buckets(jax.random.key(0), 2) == list(family.buckets)
    config = family.buckets[1][0]
    assert family.task(config).config == config
    assert jax.eval_shape(family.task(config).init, jax.random.key(0))["Dense_0"]["kernel"].shape == \
        (NUM_FEATURES, 16)
    assert family.sample(jax.random.key(3)) in family.configs
    record = config.to_dict()
    assert record["kind"] == "custom" and record["family"] == "mine"
    assert tasks.config_from_dict(record) == config
    with pytest.raises(tasks.TaskError, match="'mlp_wide' is a user's task"):
        tasks.get_task(config)


def test_sampler_family_draws_once_from_fixed_keys():
    def sample(key):
        return mlp_task(width=int(jax.random.choice(key, jnp.array([8, 16]))), name="mlp")

    family = tasks.family(sample, name="widths", num_draws=3)
    again = tasks.family(sample, name="widths", num_draws=3)
    assert [config.name for config in family.configs] == ["mlp_0", "mlp_1", "mlp_2"]
    assert family.buckets == again.buckets
    widths = [jax.eval_shape(family.task(config).init, jax.random.key(0))["Dense_0"]["kernel"].shape[1]
              for config in family.configs]
    assert len(family.buckets) == len(set(widths))


def test_different_data_is_another_config():
    assert mlp_task(seed=0).config != mlp_task(seed=1).config


def bad_loss_shape(params, batch, key):
    return jnp.square(linear_loss(params, batch, key)[0] - batch[1])


def nan_loss(params, batch, key):
    return linear_loss(params, batch, key)[0] * jnp.nan


def make_functions(**changes):
    arguments = dict(init=linear_init, loss=linear_loss, train=regression_data(16), valid=regression_data(4),
                     batch_size=4, name="bad_task")
    return tasks.from_functions(**{**arguments, **changes})


class DropoutMLP(nn.Module):
    """A linen model whose dropout follows a `train` argument, as flax's examples write it."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dropout(0.5, deterministic=not train)(nn.relu(nn.Dense(16)(x)))
        return nn.Dense(NUM_CLASSES)(x)


def make_flax(**changes):
    x, y = classification_data(16)
    arguments = dict(module=MLP(), train=(x, y), valid=(x, y), loss="cross_entropy", batch_size=4, name="bad_task")
    return tasks.from_flax(**{**arguments, **changes})


@pytest.mark.parametrize("make, changes, message", [
    (make_functions, dict(loss=bad_loss_shape), "not a float scalar"),
    (make_functions, dict(loss=nan_loss), "not finite"),
    (make_functions, dict(train=(np.zeros((16, 4), np.float32), np.zeros(15, np.float32))), "leading axes differ"),
    (make_functions, dict(batch_size=32), "16 examples, fewer than batch_size=32"),
    (make_functions, dict(roles={"w": "input"}), "params without a role"),
    (make_flax, dict(loss="hinge"), "unknown loss 'hinge'"),
    (make_flax, dict(module=nnx.Linear(NUM_FEATURES, NUM_CLASSES, rngs=nnx.Rngs(0))),
     r"pass the function that makes the flax.nnx model, e.g. lambda rngs: Linear\(\.\.\., rngs=rngs\)"),
    (make_flax, dict(module=lambda rngs: 3), "the function returned int"),
    (make_flax, dict(module=lambda rngs: nnx.BatchNorm(NUM_FEATURES, rngs=rngs)), "state besides parameters"),
    (make_flax, dict(train=classification_data(16)[0]), "must be a pair"),
    (make_flax, dict(train=(classification_data(16)[0], np.full(16, 7))), r"labels \(\) a row in \[0, 3\)"),
    (make_functions, dict(eval_loss=3), "eval_loss must be a function"),
    (make_functions, dict(eval_loss=lambda params, batch: linear_loss(params, batch, None)[0]),
     r"the loss returns the metrics \['max_error'\] and the eval_loss \[\]"),
    (make_flax, dict(module=DropoutMLP(), train_kwargs={"trian": True}),
     "initializing the module with train_kwargs={'trian': True} failed: .*unexpected keyword argument 'trian'"),
    (make_flax, dict(module=DropoutMLP(), train_kwargs={"train": True}, eval_kwargs={"trian": False}),
     "tracing the loss and eval loss on a batch failed: .*unexpected keyword argument 'trian'"),
])
def test_bad_input_is_one_line_naming_the_task(make, changes, message):
    with pytest.raises(tasks.TaskError, match=message) as raised:
        make(**changes)
    assert "\n" not in str(raised.value) and "'bad_task'" in str(raised.value)


def test_bad_families_are_one_line(task):
    with pytest.raises(tasks.TaskError, match="family 'empty' has no tasks"):
        tasks.family([], name="empty")
    with pytest.raises(tasks.TaskError, match="family 'twice': tasks share the names 'mlp'"):
        tasks.family([task, task], name="twice")
    with pytest.raises(tasks.TaskError, match="family 'drawn': a sampler family needs num_draws"):
        tasks.family(lambda key: task, name="drawn")


def test_a_built_in_task_is_made_by_from_flax_as_a_users_is(key):
    builtin = tasks.get_task("mlp_wine")
    assert isinstance(builtin, tasks.ArrayTask) and builtin.config == tasks.TASKS["mlp_wine"]
    data = builtin.data  # {split: (features, class ids)}
    mine = tasks.from_flax(builtin.loss_fn.module, data["train"], data["valid"], test=data["test"],
                           loss="cross_entropy", batch_size=32, name="my_wine")
    params = mine.init(key)
    jax.tree.map(np.testing.assert_array_equal, params, builtin.init(key))
    for split in ("train", "valid"):
        assert float(mine.loss(params, mine.batch(mine.data, key, split), key)) == \
            float(builtin.loss(params, builtin.batch(builtin.data, key, split), key))
    assert mine.roles(params) == builtin.roles(params)  # the inferred roles are the model's own
    assert mine.normalize_loss(1.0) == pytest.approx(builtin.normalize_loss(1.0), rel=1e-5)  # measured: log 3


class NNXClassifier(nnx.Module):
    """An nnx model with dropout: its parameters are drawn when it is made, from the streams it is given."""

    def __init__(self, width, rngs):
        self.hidden = nnx.Linear(NUM_FEATURES, width, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.readout = nnx.Linear(width, NUM_CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.readout(self.dropout(nnx.relu(self.hidden(x))))


def test_an_nnx_model_is_a_task_that_draws_parameters_and_dropout_from_its_keys(key):
    task = tasks.from_flax(lambda rngs: NNXClassifier(16, rngs), classification_data(48), classification_data(12, 100),
                           loss="cross_entropy", batch_size=16, name="nnx_mlp")
    params = task.init(key)
    assert jax.tree.map(np.shape, params) == {"hidden": {"bias": (16,), "kernel": (NUM_FEATURES, 16)},
                                               "readout": {"bias": (NUM_CLASSES,), "kernel": (16, NUM_CLASSES)}}
    assert not np.array_equal(params["hidden"]["kernel"], task.init(jax.random.key(7))["hidden"]["kernel"])
    assert task.roles(params) == {"hidden": {"bias": "input", "kernel": "input"},
                                  "readout": {"bias": "input", "kernel": "output"}}
    train = task.held_out(task.data, "train")
    losses = {float(task.loss(params, train, jax.random.key(seed))) for seed in range(3)}
    assert len(losses) == 3  # a new dropout mask for each key
    optimizer = optax.adam(3e-2)
    opt_state = optimizer.init(params)
    start = task.loss(params, train, key)
    for index in range(30):
        grads = jax.grad(task.loss)(params, task.batch(task.data, jax.random.fold_in(key, index)), key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    assert task.loss(params, train, key) < 0.8 * start
    # Held-out metrics run the model in evaluation mode: no dropout, the same loss as the model without it.
    loss, _ = tasks.train.held_out_metrics(task, params, task.data)
    x, y = task.held_out(task.data, "valid")
    hidden = nnx.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"][None])
    logits = hidden @ params["readout"]["kernel"] + params["readout"]["bias"][None]
    assert float(loss) == pytest.approx(float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()),
                                        rel=1e-5)


def test_a_linen_models_dropout_is_off_in_held_out_metrics_with_eval_kwargs(key):
    task = tasks.from_flax(DropoutMLP(), classification_data(48), classification_data(12, 100), loss="cross_entropy",
                           batch_size=16, name="dropout_mlp", train_kwargs={"train": True}, eval_kwargs={"train": False})
    params = task.init(key)
    batch = task.held_out(task.data, "valid")
    assert len({float(task.loss(params, batch, jax.random.key(seed))) for seed in range(3)}) == 3  # dropout on
    loss, accuracy = tasks.train.held_out_metrics(task, params, task.data)
    logits = DropoutMLP().apply({"params": params}, batch[0], train=False)
    assert float(loss) == pytest.approx(float(optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()),
                                        rel=1e-5)
    assert float(accuracy) == pytest.approx(float(jnp.mean(jnp.argmax(logits, -1) == batch[1])))
    with pytest.raises(tasks.TaskError, match="'dropout_mlp': eval_kwargs must be a dict of keyword arguments"):
        tasks.from_flax(DropoutMLP(), classification_data(48), classification_data(12, 100), loss="cross_entropy",
                        batch_size=16, name="dropout_mlp", train_kwargs={"train": True}, eval_kwargs=[False])


def test_from_functions_measures_held_out_metrics_with_its_eval_loss(key):
    def noisy_loss(params, batch, key):  # training draws noise, as dropout does; evaluation does not
        return linear_loss(params, batch, key)[0] + jax.random.uniform(key)

    def eval_loss(params, batch):
        return linear_loss(params, batch, None)[0]
    task = make_functions(loss=noisy_loss, eval_loss=eval_loss)
    params = task.init(key)
    assert float(tasks.train.held_out_metrics(task, params, task.data)[0]) == \
        pytest.approx(float(eval_loss(params, task.held_out(task.data, "valid"))))
    with pytest.raises(tasks.TaskError, match="the eval_loss returned an array of shape"):
        make_functions(eval_loss=lambda params, batch: bad_loss_shape(params, batch, None))
