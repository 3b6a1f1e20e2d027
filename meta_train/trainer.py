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
from meta_train.config import ConfigError, MetaTrainConfig, resolve_family, resolve_own_objects
from meta_train.curriculum import Curriculum, CurriculumState
from meta_train.estimators import ESTIMATORS, PER_VARIANT_METRICS, Estimator
from meta_train.sharding import replicated, split_over_tasks, task_mesh
from meta_train.truncation import ConstantLength, LogUniformLength
from meta_train.unroll import Unroller

# Non-finite meta-gradients in a row after which the run stops instead of going on without progress.
MAX_CONSECUTIVE_SKIPS = 20

# XLA options of the outer step on CPU. The step is hundreds of small kernels, which LLVM's -O2 compiles
# faster than XLA's default -O3 for the same step time (benchmarks.meta_train_throughput measures both).
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 2}


class MetaState(NamedTuple):
    theta: Any  # the learned optimizer's meta-parameters
    meta_opt_state: Any  # the outer optimizer's state, over theta raveled into one vector
    estimator_states: tuple  # one per shape bucket of task configs; every leaf has a leading task axis
    key: jax.Array  # the key of the next outer step
    step: jax.Array  # int32: outer steps taken
    curriculum: CurriculumState  # how often each config is shown, and why


def _init_keys(config: MetaTrainConfig):
    """(theta, workers, rest) keys of a run: everything random follows from config.seed."""
    return jax.random.split(jax.random.key(config.seed), 3)


def initial_theta(config: MetaTrainConfig):
    """The theta a run of this config starts from (what `meta_train` compares its result with): the
    architecture's own start, or with init_from the theta of that optimizer."""
    optimizer = config.optimizer
    theta = optimizer.init(_init_keys(config)[0])
    return warm_start(config, optimizer, theta) if config.init_from else theta


def warm_start(config: MetaTrainConfig, optimizer: lopt.LearnedOptimizer, fresh_theta):
    """The theta of config.init_from's optimizer, fitted to this config's (which may differ from it in
    harness settings only): entries it lacks, such as fit_decay's, start as in fresh_theta."""
    try:
        source, theta, _ = lopt.load_optimizer(config.init_from)
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise ConfigError(f"MetaTrainConfig.init_from={config.init_from!r}: {error}") from None
    if source.architecture != optimizer.architecture:
        raise ConfigError(f"MetaTrainConfig.init_from={config.init_from!r} is a {source.architecture} optimizer; "
                          f"this config trains {optimizer.architecture}")
    theirs, ours = source.settings(), optimizer.settings()
    differing = sorted(name for name in ours if name not in optimizer.harness_settings and theirs.get(name) != ours[name])
    if differing:
        raise ConfigError(f"MetaTrainConfig.init_from={config.init_from!r} differs in "
                          + ", ".join(f"optimizer.{name} (it has {theirs.get(name)!r}, this config {ours[name]!r})"
                                      for name in differing))
    try:
        merged = lopt.refit_theta(optimizer, {**fresh_theta, **theta})
    except ValueError as error:
        raise ConfigError(f"MetaTrainConfig.init_from={config.init_from!r}: {error}") from None
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), merged)


def trainable_mask(config: MetaTrainConfig, theta) -> jax.Array | None:
    """meta_train_only as a 0/1 vector over theta raveled (1: meta-trained); None when all of it is."""
    if not config.meta_train_only:
        return None
    names = [name.strip() for name in config.meta_train_only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(theta))
    if unknown or not names:
        # A preset's list (the main job's) meets another architecture or setting here: say how to clear it.
        raise ConfigError(f"MetaTrainConfig.meta_train_only={config.meta_train_only!r}: "
                          f"{', '.join(unknown) or 'no entry'} not in this optimizer's theta, whose entries are "
                          f"{', '.join(sorted(theta))} (--set meta_train_only= meta-trains all of it)")
    return ravel_pytree({name: jax.tree.map(lambda x: jnp.full(jnp.shape(x), float(name in names), jnp.float32), value)
                         for name, value in theta.items()})[0]


def meta_optimizer(config: MetaTrainConfig) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
    """AdamW with linear warmup and cosine decay, after global-norm clipping of the meta-gradient."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.outer_learning_rate,
        warmup_steps=min(config.outer_warmup_steps, config.outer_steps - 1), decay_steps=config.outer_steps,
        end_value=config.outer_final_learning_rate)
    # A non-finite meta-gradient (an estimate that met a numerical accident) skips the step, so theta
    # never becomes NaN; the outer loop stops after MAX_CONSECUTIVE_SKIPS of them in a row.
    optimizer = optax.apply_if_finite(
        optax.chain(optax.clip_by_global_norm(config.outer_clip_norm),
                    optax.adamw(schedule, weight_decay=config.outer_weight_decay)),
        max_consecutive_errors=2 ** 30)
    return optimizer, schedule


def estimator_for(config: MetaTrainConfig, bucket: tuple[tasks.Task, ...], optimizer: lopt.LearnedOptimizer,
                  mesh: Mesh, mask: jax.Array | None = None) -> Estimator:
    if config.estimator == "full_es":  # whole runs of the longest length, from scratch every estimate
        schedule, truncation = ConstantLength(config.max_inner_length), config.max_inner_length
    else:
        schedule = LogUniformLength(config.min_inner_length, config.max_inner_length)
        truncation = config.truncation_length
    particles = 1 if config.estimator == "tbptt" else 2
    unroller = Unroller(bucket, optimizer, schedule, num_particles=particles, max_meta_loss=config.max_meta_loss,
                        meta_loss_split=config.meta_loss_split, valid_weight=config.meta_loss_valid_weight,
                        augmentation=config.augmentation(), time_power=config.meta_loss_time_power)
    options = {"worker_sharding": split_over_tasks(mesh), "perturbation_mask": mask}
    if config.estimator == "tbptt":
        return ESTIMATORS["tbptt"](unroller, config.workers_per_config, truncation, **options)
    return ESTIMATORS[config.estimator](unroller, config.workers_per_config, truncation, config.sigma, **options)


class MetaTrainer:
    """Everything a run needs, built from a config. `init()` and `step(state, data)` are jitted once;
    the workers of every estimator are split over `mesh` (default: the devices that divide num_tasks).
    There is one estimator per shape bucket of the family's configs (see tasks.TaskFamily.sample_buckets);
    `cell_configs` lists every config of every bucket, the cells of the curriculum, in order."""

    def __init__(self, config: MetaTrainConfig, mesh: Mesh | None = None, family: tasks.TaskFamily | None = None):
        self.config = config
        self.optimizer = config.optimizer
        if family is None:
            resolve_own_objects(config)
            family = resolve_family(config.task_family)
        family_key = jax.random.fold_in(jax.random.key(config.seed), 1)
        self.family = family
        self.buckets = family.sample_buckets(family_key, config.num_task_configs)
        self.cell_configs = [task_config for bucket in self.buckets for task_config in bucket]
        self.task_configs = [bucket[0] for bucket in self.buckets]  # each bucket's model
        self.mesh = task_mesh(config.workers_per_config) if mesh is None else mesh
        self.start_theta = jax.device_get(initial_theta(config))
        self.mask = trainable_mask(config, self.start_theta)
        self.estimators = [estimator_for(config, tuple(family.task(c) for c in bucket), self.optimizer, self.mesh,
                                         self.mask) for bucket in self.buckets]
        self.curriculum = Curriculum(tuple(len(bucket) for bucket in self.buckets), config.curriculum,
                                     config.curriculum_floor, config.curriculum_decay)
        self.meta_optimizer, self.schedule = meta_optimizer(config)
        # Sharding prefixes: every leaf under estimator_states has the task axis first.
        same = replicated(self.mesh)
        self.state_sharding = MetaState(same, same, split_over_tasks(self.mesh), same, same, same)
        self.init = jax.jit(self._init, out_shardings=self.state_sharding)
        # The state a checkpoint is written from, in buffers of its own: orbax goes on writing in a
        # background thread, and the next step donates (frees or overwrites) the buffers of `state`.
        self.snapshot = jax.jit(lambda state: jax.tree.map(jnp.copy, state), out_shardings=self.state_sharding)
        on_cpu = self.mesh.devices.flat[0].platform == "cpu"
        self.step = jax.jit(self._step, in_shardings=(self.state_sharding, same),
                            out_shardings=(self.state_sharding, same), donate_argnums=0,
                            compiler_options=CPU_COMPILER_OPTIONS if on_cpu else None)
        # CPU devices that share collectives deadlock with two outer steps in flight: processes over
        # gloo, and the virtual devices of one process (a test run hung in the step's dispatch, every
        # XLA worker thread idle). The caller waits for each step before dispatching the next.
        self.one_step_at_a_time = on_cpu and self.mesh.devices.size > 1

    def _init(self) -> MetaState:
        _, workers_key, key = _init_keys(self.config)
        theta = jax.tree.map(jnp.asarray, self.start_theta)
        curriculum = self.curriculum.init()
        parts = self.curriculum.split(self.curriculum.probabilities(curriculum))
        states = tuple(estimator.init(theta, jax.random.fold_in(workers_key, index), variant_probs)
                       for index, (estimator, (_, variant_probs)) in enumerate(zip(self.estimators, parts)))
        return MetaState(theta, self.meta_optimizer.init(ravel_pytree(theta)[0]), states, key,
                         jnp.asarray(0, jnp.int32), curriculum)

    def data(self) -> tuple:
        """Every bucket's data, replicated on the mesh's devices: the second argument of `step`."""
        return jax.device_put(tuple(estimator.unroller.data for estimator in self.estimators), replicated(self.mesh))

    def set_baselines(self, curves_per_bucket) -> None:
        """Tuned-Adam meta-loss curves, (cells, length) per bucket, for the curriculum's regret (see
        meta_train.curriculum.baseline_curves). Before the first `step`: the step is traced with them."""
        for estimator, curves in zip(self.estimators, curves_per_bucket):
            estimator.unroller.baseline_curves = jnp.asarray(curves, jnp.float32)

    def cell_names(self) -> list[str]:
        return [config.short_name() for config in self.cell_configs]

    def _step(self, state: MetaState, data: tuple) -> tuple[MetaState, dict[str, jax.Array]]:
        key, *estimate_keys = jax.random.split(state.key, len(self.estimators) + 1)
        parts = self.curriculum.split(self.curriculum.probabilities(state.curriculum))
        grads, new_states, metrics, per_variant = [], [], [], []
        for estimator, estimator_state, bucket_data, estimate_key, (_, variant_probs) in zip(
                self.estimators, state.estimator_states, data, estimate_keys, parts):
            grad, estimator_state, bucket_metrics = estimator.estimate(state.theta, estimator_state, bucket_data,
                                                                       estimate_key, variant_probs)
            grads.append(grad)
            new_states.append(estimator_state)
            per_variant.append([bucket_metrics.pop(name) for name in PER_VARIANT_METRICS])
            metrics.append(bucket_metrics)
        # The meta-optimizer steps theta as one vector: per-leaf updates would each be kernels of their
        # own, and the compile time of the step grows with their number. A bucket's share of the
        # meta-gradient is its curriculum probability (1 / buckets when uniform).
        flat_theta, unravel = ravel_pytree(state.theta)
        flat_grads = [ravel_pytree(grad)[0] for grad in grads]
        bucket_norms = {f"bucket_gradient_norm/{config.short_name()}": jnp.linalg.norm(grad)
                        for config, grad in zip(self.task_configs, flat_grads)}
        meta_grad = sum(share * grad for grad, (share, _) in zip(flat_grads, parts))
        if self.mask is not None:  # the entries left out stay as they started (AdamW's decay included)
            meta_grad = meta_grad * self.mask
        updates, meta_opt_state = self.meta_optimizer.update(meta_grad, state.meta_opt_state, flat_theta)
        if self.mask is not None:
            updates = updates * self.mask
        theta = unravel(optax.apply_updates(flat_theta, updates))
        curriculum = self.curriculum.update(state.curriculum,
                                            *(jnp.concatenate(column) for column in zip(*per_variant)))
        summary = jax.tree.map(lambda *m: sum(m) / len(m), *metrics)
        summary.update(bucket_norms, meta_grad_norm=optax.tree.norm(meta_grad),
                       outer_learning_rate=self.schedule(state.step),
                       consecutive_skips=meta_opt_state.notfinite_count.astype(jnp.float32),
                       skipped_steps=meta_opt_state.total_notfinite.astype(jnp.float32))
        return MetaState(theta, meta_opt_state, tuple(new_states), key, state.step + 1, curriculum), summary

    def inner_steps_per_outer_step(self) -> int:
        """Inner training steps one outer step takes, over every worker and particle."""
        return sum(self.config.workers_per_config * estimator.unroller.num_particles * estimator.truncation_length
                   for estimator in self.estimators)

    def describe(self) -> str:
        text = "; ".join(" | ".join(describe_task(config) for config in bucket) for bucket in self.buckets)
        if isinstance(self.family, tasks.CustomFamily) and len(self.cell_configs) != self.config.num_task_configs:
            # A user's family is its tasks: said here, where a num_task_configs they set would go unused.
            text += (f" (all {len(self.cell_configs)} tasks of family {self.family.name!r}; num_task_configs="
                     f"{self.config.num_task_configs} applies to sampled families only)")
        return text


def describe_task(config: tasks.TaskConfig) -> str:
    if isinstance(config, tasks.ImageMLPConfig):
        return (f"{config.dataset} {config.image_size}x{config.image_size} MLP width {config.width} "
                f"depth {config.depth} ({config.parameterization})")
    if hasattr(config, "width") and hasattr(config, "depth"):
        return (f"{config.kind} on {config.dataset} width {config.width} depth {config.depth} "
                f"({getattr(config, 'parameterization', 'sp')})")
    return str(config)
