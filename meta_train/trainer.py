"""One outer step: estimate the meta-gradient on every task config, step theta with an Optax
meta-optimizer. The whole meta-training state is one pytree (`MetaState`), so a checkpoint of it
resumes a run exactly; `MetaTrainer.step` is jitted once, with the workers sharded over the devices.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh

import lopt
import tasks
from meta_train.config import MetaTrainConfig
from meta_train.estimators import ESTIMATORS, Estimator
from meta_train.sharding import replicated, split_over_tasks, task_mesh
from meta_train.truncation import ConstantLength, LogUniformLength
from meta_train.unroll import Unroller

# Non-finite meta-gradients in a row after which the run stops instead of going on without progress.
MAX_CONSECUTIVE_SKIPS = 20

# XLA options of the outer step on CPU. The step is hundreds of small kernels, and LLVM's -O2 compiles
# them about a quarter faster than XLA's default -O3 at the same measured step time
# (benchmarks.meta_train_throughput, both presets of its table).
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 2}


class MetaState(NamedTuple):
    theta: Any  # the learned optimizer's meta-parameters
    meta_opt_state: Any  # the outer optimizer's state, over theta raveled into one vector
    estimator_states: tuple  # one per task config; every leaf has a leading task axis
    key: jax.Array  # the key of the next outer step
    step: jax.Array  # int32: outer steps taken


def _init_keys(config: MetaTrainConfig):
    """(theta, workers, rest) keys of a run: everything random follows from config.seed."""
    return jax.random.split(jax.random.key(config.seed), 3)


def initial_theta(config: MetaTrainConfig):
    """The theta a run of this config starts from (what `meta_train` compares its result with)."""
    return config.optimizer().init(_init_keys(config)[0])


def meta_optimizer(config: MetaTrainConfig) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
    """AdamW with linear warmup and cosine decay, after global-norm clipping of the meta-gradient."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate,
        warmup_steps=min(config.warmup_steps, config.outer_steps - 1), decay_steps=config.outer_steps,
        end_value=config.final_learning_rate)
    # A non-finite meta-gradient (an estimate that met a numerical accident) skips the step, so theta
    # never becomes NaN; the outer loop stops after MAX_CONSECUTIVE_SKIPS of them in a row.
    optimizer = optax.apply_if_finite(
        optax.chain(optax.clip_by_global_norm(config.clip_norm),
                    optax.adamw(schedule, weight_decay=config.weight_decay)),
        max_consecutive_errors=2 ** 30)
    return optimizer, schedule


def estimator_for(config: MetaTrainConfig, task: tasks.Task, optimizer: lopt.LearnedOptimizer,
                  mesh: Mesh) -> Estimator:
    if config.estimator == "full_es":  # whole runs of the longest length, from scratch every estimate
        schedule, truncation = ConstantLength(config.max_inner_length), config.max_inner_length
    else:
        schedule = LogUniformLength(config.min_inner_length, config.max_inner_length)
        truncation = config.truncation_length
    particles = 1 if config.estimator == "tbptt" else 2
    unroller = Unroller(task, optimizer, schedule, num_particles=particles, max_meta_loss=config.max_meta_loss,
                        meta_loss_split=config.meta_loss_split, valid_weight=config.meta_loss_valid_weight,
                        augmentation=config.augmentation())
    placement = {"worker_sharding": split_over_tasks(mesh)}
    if config.estimator == "tbptt":
        return ESTIMATORS["tbptt"](unroller, config.num_tasks, truncation, **placement)
    return ESTIMATORS[config.estimator](unroller, config.num_tasks, truncation, config.sigma, **placement)


class MetaTrainer:
    """Everything a run needs, built from a config. `init()` and `step(state, data)` are jitted once;
    the workers of every estimator are split over `mesh` (default: the devices that divide num_tasks)."""

    def __init__(self, config: MetaTrainConfig, mesh: Mesh | None = None):
        self.config = config
        self.optimizer = config.optimizer()
        family = tasks.get_family(config.task_family)
        family_key = jax.random.fold_in(jax.random.key(config.seed), 1)
        self.task_configs = family.sample_many(family_key, config.num_task_configs)
        self.tasks = [family.task(task_config) for task_config in self.task_configs]
        self.mesh = task_mesh(config.num_tasks) if mesh is None else mesh
        self.estimators = [estimator_for(config, task, self.optimizer, self.mesh) for task in self.tasks]
        self.meta_optimizer, self.schedule = meta_optimizer(config)
        # Sharding prefixes: every leaf under estimator_states has the task axis first.
        same = replicated(self.mesh)
        self.state_sharding = MetaState(same, same, split_over_tasks(self.mesh), same, same)
        self.init = jax.jit(self._init, out_shardings=self.state_sharding)
        # The state a checkpoint is written from, in buffers of its own: orbax goes on writing in a
        # background thread, and the next step donates (frees or overwrites) the buffers of `state`.
        self.snapshot = jax.jit(lambda state: jax.tree.map(jnp.copy, state), out_shardings=self.state_sharding)
        on_cpu = self.mesh.devices.flat[0].platform == "cpu"
        self.step = jax.jit(self._step, in_shardings=(self.state_sharding, same),
                            out_shardings=(self.state_sharding, same), donate_argnums=0,
                            compiler_options=CPU_COMPILER_OPTIONS if on_cpu else None)

    def _init(self) -> MetaState:
        theta_key, workers_key, key = _init_keys(self.config)
        theta = self.optimizer.init(theta_key)
        states = tuple(estimator.init(theta, jax.random.fold_in(workers_key, index))
                       for index, estimator in enumerate(self.estimators))
        return MetaState(theta, self.meta_optimizer.init(ravel_pytree(theta)[0]), states, key,
                         jnp.asarray(0, jnp.int32))

    def data(self) -> tuple:
        """The tasks' data, replicated on the mesh's devices: the second argument of `step`."""
        return jax.device_put(tuple(task.data for task in self.tasks), replicated(self.mesh))

    def _step(self, state: MetaState, data: tuple) -> tuple[MetaState, dict[str, jax.Array]]:
        key, *estimate_keys = jax.random.split(state.key, len(self.estimators) + 1)
        grads, new_states, metrics = [], [], []
        for estimator, estimator_state, task_data, estimate_key in zip(
                self.estimators, state.estimator_states, data, estimate_keys):
            grad, estimator_state, task_metrics = estimator.estimate(state.theta, estimator_state, task_data,
                                                                     estimate_key)
            grads.append(grad)
            new_states.append(estimator_state)
            metrics.append(task_metrics)
        # The meta-optimizer steps theta as one vector: per-leaf updates would each be kernels of their
        # own, and the compile time of the step grows with their number.
        flat_theta, unravel = ravel_pytree(state.theta)
        meta_grad = sum(ravel_pytree(grad)[0] for grad in grads) / len(grads)
        updates, meta_opt_state = self.meta_optimizer.update(meta_grad, state.meta_opt_state, flat_theta)
        theta = unravel(optax.apply_updates(flat_theta, updates))
        summary = jax.tree.map(lambda *m: sum(m) / len(m), *metrics)
        summary.update(meta_grad_norm=optax.tree.norm(meta_grad), outer_learning_rate=self.schedule(state.step),
                       consecutive_skips=meta_opt_state.notfinite_count.astype(jnp.float32),
                       skipped_steps=meta_opt_state.total_notfinite.astype(jnp.float32))
        return MetaState(theta, meta_opt_state, tuple(new_states), key, state.step + 1), summary

    def inner_steps_per_outer_step(self) -> int:
        """Inner training steps one outer step takes, over every worker and particle."""
        return sum(self.config.num_tasks * estimator.unroller.num_particles * estimator.truncation_length
                   for estimator in self.estimators)

    def describe(self) -> str:
        return "; ".join(describe_task(config) for config in self.task_configs)


def describe_task(config: tasks.TaskConfig) -> str:
    if isinstance(config, tasks.ImageMLPConfig):
        return (f"{config.dataset} {config.image_size}x{config.image_size} MLP width {config.width} "
                f"depth {config.depth} ({config.parameterization})")
    return str(config)
