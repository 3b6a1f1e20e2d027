"""Truncated inner training: a worker trains one task instance with the learned optimizer for a
truncation of K steps inside `lax.scan`, keeps its state across truncations, and restarts on a fresh
instance (new init, new data order, new length) when its run ends or diverges. An unroller serves one
shape bucket of configs (the same model on datasets of the same shape): a fresh run also draws which of
them it trains, with the probabilities the caller gives (the meta-training curriculum).

A worker holds P "particles": copies of the inner run that differ only in the meta-parameters they use
(P = 2 for the antithetic pair of ES / PES, 1 for truncated backprop). The particles share the step
counter, the run length and the random keys, so they see the same batches and reset together.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import tasks
from lopt import LearnedOptimizer
from tasks.train import train_step


class Worker(NamedTuple):
    params: Any  # leading particle axis P
    opt_state: Any  # leading particle axis P
    step: jax.Array  # int32: steps taken in the current run
    length: jax.Array  # int32: the current run's length
    run_key: jax.Array  # the current run's key: its init and its batches
    variant: jax.Array  # int32: which config of the bucket the current run trains


class Truncation(NamedTuple):
    """What one truncation of one worker produced, per step."""

    meta_losses: jax.Array  # (P, K) normalized losses, clipped: what the estimators differentiate
    raw_losses: jax.Array  # (P, K) training losses as the task reports them
    resets: jax.Array  # (K,) bool: the run ended at this step (the next step is a fresh run)
    diverged: jax.Array  # (K,) bool: it ended because a particle's loss was non-finite or too large
    variants: jax.Array  # (K,) int32: the config of the bucket that each step trained
    steps: jax.Array  # (K,) int32: each step's index in its run, from 1
    next_variants: jax.Array  # (K,) int32: the config of the run after each step (a fresh one at a reset)


# fold_in(run_key, AUGMENTATION_STREAM) draws a run's augmentation factors: never a step's batch index.
AUGMENTATION_STREAM = 2 ** 31 - 1
# fold_in(length_key, VARIANT_STREAM) draws which config of the bucket a run trains.
VARIANT_STREAM = 1


class Unroller:
    """Runs truncations of a bucket of task configs (one config, or one model on several datasets of the
    same shape) with one learned-optimizer architecture.

    The meta-loss of a step is the normalized loss on its training batch ("train"), on a validation batch
    ("valid"), or `valid_weight` of the second plus the rest of the first ("mix"), times (k + 1) f^k at
    the fraction f of its run with `time_power` k > 0 (the end of a run, whose loss evaluations measure,
    weighs most; 0 weighs every step alike). With an augmentation,
    every run sees the task through factors drawn from its run key (tasks.augment)."""

    def __init__(self, task: tasks.Task | tuple[tasks.Task, ...], optimizer: LearnedOptimizer, schedule, *,
                 num_particles: int, max_meta_loss: float, meta_loss_split: str = "train",
                 valid_weight: float = 0.5, augmentation: tasks.Augmentation | None = None,
                 time_power: float = 0.0):
        self.variants = tuple(task) if isinstance(task, (tuple, list)) else (task,)
        # The bucket's model: every variant has its parameters, loss and normalizer; only the batches differ.
        self.task = task = self.variants[0]
        self.optimizer = optimizer
        self.schedule = schedule
        self.num_particles = num_particles
        # A normalized loss above this (or non-finite) counts as divergence: the run restarts and the
        # meta-loss sees the cap, never a NaN.
        self.max_meta_loss = max_meta_loss
        self.meta_loss_split = meta_loss_split
        self.valid_weight = {"train": 0.0, "valid": 1.0, "mix": valid_weight}[meta_loss_split]
        self.time_power = time_power
        self.augmentation = augmentation or tasks.Augmentation()
        self.param_shapes = jax.eval_shape(task.init, jax.random.key(0))
        self.roles = task.roles(self.param_shapes)
        batch_shapes = jax.eval_shape(lambda: task.batch(task.data, jax.random.key(0)))
        for variant in self.variants[1:]:
            if (jax.eval_shape(variant.init, jax.random.key(0)) != self.param_shapes
                    or jax.eval_shape(lambda: variant.batch(variant.data, jax.random.key(0))) != batch_shapes):
                raise ValueError(f"{variant} and {task} share a bucket, so their parameters and batches must "
                                 "have the same shapes")
        # Meta-training fills this with each variant's tuned-Adam meta-loss curve (variants, max length)
        # for the curriculum's regret; without it, the regret of a step is 0.
        self.baseline_curves: jax.Array | None = None

    @property
    def data(self) -> tuple:
        """What `unroll` takes as data: every variant's."""
        return tuple(variant.data for variant in self.variants)

    def _batch(self, data: tuple, variant, key, split: str):
        """A batch of the current run's config; data is `self.data` (every variant's)."""
        if len(self.variants) == 1:
            return self.task.batch(data[0], key, split)
        branches = [lambda d, k, i=i, v=v: v.batch(d[i], k, split) for i, v in enumerate(self.variants)]
        return jax.lax.switch(variant, branches, data, key)

    def _draw_variant(self, key, variant_probs) -> jax.Array:
        if len(self.variants) == 1:
            return jnp.asarray(0, jnp.int32)
        probs = (jnp.full(len(self.variants), 1.0 / len(self.variants)) if variant_probs is None
                 else variant_probs)
        return jax.random.choice(jax.random.fold_in(key, VARIANT_STREAM), len(self.variants), p=probs
                                 ).astype(jnp.int32)

    def _transform(self, theta, length):
        return self.optimizer.transform(theta, length, self.roles)

    def run_task(self, run_key) -> tasks.Task:
        """The task as this run sees it: augmented by factors of its own, or as it is. The factors are
        drawn again from the run key at every step rather than kept: a few random numbers per tensor
        (one per entry at the "parameter" level), and the worker state, checkpoints included, keeps
        its layout whether augmentation is on or off."""
        if not self.augmentation.active:
            return self.task
        factors = self.augmentation.sample(jax.random.fold_in(run_key, AUGMENTATION_STREAM), self.param_shapes)
        return self.augmentation.apply(self.task, factors)

    def fresh_run(self, thetas, run_key, length, variant=0) -> Worker:
        """A new run of the bucket's config `variant`: every particle starts from the same init."""
        params = self.run_task(run_key).init(jax.random.fold_in(run_key, 0))
        params = self._particles(params)
        opt_state = jax.vmap(lambda theta, p: self._transform(theta, length).init(p))(thetas, params)
        return Worker(params, opt_state, jnp.asarray(0, jnp.int32), length, run_key,
                      jnp.asarray(variant, jnp.int32))

    def _particles(self, tree):
        """tree repeated on a leading particle axis: every particle of a run starts from the same state."""
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (self.num_particles,) + x.shape), tree)

    def init(self, thetas, key, stagger: bool = True, variant_probs=None) -> Worker:
        """A worker at the start of a run. With stagger, the first run gets a random fraction of its
        length, so that workers started together do not all reset together."""
        length_key, stagger_key, run_key = jax.random.split(key, 3)
        length = self.schedule.sample(length_key)
        if stagger:  # never shorter than the schedule's shortest run: no horizon it would not draw
            shortest = jnp.minimum(getattr(self.schedule, "min_length", 1), length)
            length = jax.random.randint(stagger_key, (), shortest, length + 1)
        return self.fresh_run(thetas, run_key, length, self._draw_variant(length_key, variant_probs))

    def step(self, thetas, worker: Worker, data, variant_probs=None) -> tuple[Worker, tuple]:
        """One inner step of every particle of one worker (a fresh run begins if this one ended); the fresh
        run trains config i of the bucket with probability variant_probs[i] (uniform if None)."""
        step_key = jax.random.fold_in(worker.run_key, worker.step + 1)
        task = self.run_task(worker.run_key)

        def particle_step(theta, params, opt_state):
            transform = self._transform(theta, worker.length)
            params, opt_state, loss = train_step(
                task, transform, params, opt_state, data, step_key,
                draw_batch=lambda key: self._batch(data, worker.variant, key, "train"))
            meta = task.normalize_loss(loss)
            if self.valid_weight:
                valid_key = jax.random.fold_in(step_key, 1)
                valid_batch = self._batch(data, worker.variant, valid_key, "valid")
                # Held out, the model runs as it is measured: in inference mode (dropout off).
                valid = task.normalize_loss(task.eval_loss_and_aux(params, valid_batch)[0])
                weight = self.valid_weight
                meta = valid if weight == 1 else (1 - weight) * meta + weight * valid
            if isinstance(task, tasks.AugmentedTask):  # report the task's own loss, not the scaled one
                loss = loss / task.factors.loss_scale
            return params, opt_state, loss, meta

        params, opt_state, raw_loss, meta_loss = jax.vmap(particle_step)(thetas, worker.params, worker.opt_state)
        bad = ~jnp.isfinite(meta_loss) | (meta_loss > self.max_meta_loss)
        meta_loss = jnp.where(bad, self.max_meta_loss, meta_loss)
        diverged = jnp.any(bad)
        step = worker.step + 1
        if self.time_power:  # (k + 1) f^k at the fraction f of the run: weights of mean 1, the end's the most
            fraction = step.astype(jnp.float32) / worker.length.astype(jnp.float32)
            meta_loss = meta_loss * ((self.time_power + 1) * fraction ** self.time_power)
        done = (step >= worker.length) | diverged
        # Run keys: fold_in(key, 0) inits, fold_in(key, step + 1) draws batches, split(key) the next run.
        next_key, length_key = jax.random.split(worker.run_key)
        fresh = self.fresh_run(thetas, next_key, self.schedule.sample(length_key),
                               self._draw_variant(length_key, variant_probs))
        current = Worker(params, opt_state, step, worker.length, worker.run_key, worker.variant)
        new_worker = jax.tree.map(lambda new, old: jnp.where(done, new, old), fresh, current)
        return new_worker, (meta_loss, raw_loss, done, diverged, worker.variant, step, new_worker.variant)

    def regret(self, truncation: Truncation) -> jax.Array:
        """(..., K): each step's mean meta-loss over particles minus the tuned baseline's at the same step
        of a run on the same config; 0 without baseline curves."""
        if self.baseline_curves is None:
            return jnp.zeros(truncation.steps.shape)
        curves = jnp.asarray(self.baseline_curves)
        at_step = jnp.minimum(truncation.steps, curves.shape[1]) - 1
        return jnp.mean(truncation.meta_losses, axis=-2) - curves[truncation.variants, at_step]

    def unroll(self, thetas, worker: Worker, data, num_steps: int, variant_probs=None
               ) -> tuple[Worker, Truncation]:
        """num_steps inner steps for each particle of one worker, particle p using thetas[p]."""
        worker, outputs = jax.lax.scan(
            lambda worker, _: self.step(thetas, worker, data, variant_probs), worker, length=num_steps)
        meta_losses, raw_losses, *per_step = outputs
        return worker, Truncation(meta_losses.T, raw_losses.T, *per_step)

    def unroll_workers(self, thetas, workers: Worker, data, num_steps: int, variant_probs=None
                       ) -> tuple[Worker, Truncation]:
        """`unroll` for many workers (leading axis of thetas and workers): the same result, with the
        vmap inside the scan, which traces and compiles faster than a vmapped scan."""
        many_steps = jax.vmap(self.step, in_axes=(0, 0, None, None))
        workers, outputs = jax.lax.scan(
            lambda workers, _: many_steps(thetas, workers, data, variant_probs), workers, length=num_steps)
        meta_losses, raw_losses, *per_step = outputs
        # Scan stacks steps first: (K, tasks, P) -> (tasks, P, K), and (K, tasks) -> (tasks, K).
        return workers, Truncation(jnp.moveaxis(meta_losses, 0, -1), jnp.moveaxis(raw_losses, 0, -1),
                                   *(x.T for x in per_step))

