"""Meta-gradient estimators sharing one truncated unroll: PES, ES-Single, truncated ES, full-length ES
and truncated backprop. Each has `init(theta, key) -> state` and
`estimate(theta, state, data, key, variant_probs=None) -> (meta_grad, state, metrics)`, over `num_tasks`
vmapped workers (the runs they start train config i of the unroller's bucket with probability
variant_probs[i]).

PES (Vicol et al. 2021): antithetic perturbations theta +/- eps, eps ~ N(0, sigma^2 I), one pair per
task; each task keeps the sum of the perturbations applied since its inner run began, and the estimate
is mean over tasks of (L+ - L-) * accumulated_eps / (2 sigma^2). Steps after a reset inside the
truncation belong to a run that has only seen the fresh eps, so they are weighted by eps alone. This
makes the estimate unbiased for the gradient of the (smoothed) loss of the whole inner run, where
truncated ES, which weights every step by the fresh eps, ignores how theta shaped the state the
truncation started from.

ES-Single (Vicol, Kolter and Swersky 2023) is unbiased for the same objective with a variance that does
not grow with the number of truncations: each task keeps one perturbation for the whole inner run
instead of drawing one per truncation, so the estimate weights (L+ - L-) by that one eps, never a sum.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from meta_train.unroll import Truncation, Unroller, Worker


class EstimatorState(NamedTuple):
    workers: Worker  # leading task axis
    accumulator: Any  # what the perturbations of the runs under way need, with theta raveled (PES, ES-Single); else ()


# Metrics with one entry per config of the bucket (what the curriculum reads), not averaged over buckets.
PER_VARIANT_METRICS = ("variant_steps", "variant_regret_sum", "variant_runs_started")


def _metrics(unroller: Unroller, truncation: Truncation) -> dict[str, jax.Array]:
    one_hot = lambda variants: jax.nn.one_hot(variants, len(unroller.variants))  # noqa: E731  (..., K, V)
    steps_on = one_hot(truncation.variants)
    return {"meta_loss": jnp.mean(truncation.meta_losses),
            "train_loss": jnp.mean(truncation.raw_losses),
            "diverged_fraction": jnp.mean(truncation.diverged),
            "resets": jnp.sum(truncation.resets).astype(jnp.float32),
            "variant_steps": jnp.sum(steps_on, axis=(0, 1)),
            "variant_regret_sum": jnp.einsum("tk,tkv->v", unroller.regret(truncation), steps_on),
            "variant_runs_started": jnp.einsum("tk,tkv->v", truncation.resets.astype(jnp.float32),
                                               one_hot(truncation.next_variants))}


def unravel_like(theta, flat: jax.Array):
    """flat (a raveled theta-like vector) as a pytree like theta."""
    return ravel_pytree(theta)[1](flat)


class Estimator(abc.ABC):
    def __init__(self, unroller: Unroller, num_tasks: int, truncation_length: int, *, stagger: bool = True,
                 worker_sharding: jax.sharding.Sharding | None = None, perturbation_mask: jax.Array | None = None):
        self.unroller = unroller
        self.num_tasks = num_tasks
        self.truncation_length = truncation_length
        self.stagger = stagger  # give workers first runs of random lengths, so they do not reset together
        # Where arrays with a leading task axis live (split over devices); None leaves it to XLA.
        self.worker_sharding = worker_sharding
        # A 0/1 vector over theta raveled: the ES estimators perturb only its 1 entries (the others are
        # not meta-trained); None perturbs all of theta.
        self.perturbation_mask = perturbation_mask

    def _split_over_tasks(self, tree):
        if self.worker_sharding is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, jax.tree.map(lambda _: self.worker_sharding, tree))

    def _init_workers(self, theta, key, num_particles: int, stagger: bool | None = None,
                      variant_probs=None) -> Worker:
        stagger = self.stagger if stagger is None else stagger
        thetas = jax.tree.map(lambda t: jnp.broadcast_to(t, (num_particles,) + t.shape), theta)
        keys = jax.random.split(key, self.num_tasks)
        return self._split_over_tasks(jax.vmap(
            lambda k: self.unroller.init(thetas, k, stagger, variant_probs))(keys))

    @abc.abstractmethod
    def init(self, theta, key, variant_probs=None) -> EstimatorState: ...

    @abc.abstractmethod
    def estimate(self, theta, state: EstimatorState, data, key, variant_probs=None
                 ) -> tuple[Any, EstimatorState, dict]: ...


class _Antithetic(Estimator):
    """Shared by the ES family: perturb, unroll the +/- pair, difference the meta-losses."""

    def __init__(self, unroller: Unroller, num_tasks: int, truncation_length: int, sigma: float, *,
                 stagger: bool = True, worker_sharding: jax.sharding.Sharding | None = None,
                 perturbation_mask: jax.Array | None = None):
        super().__init__(unroller, num_tasks, truncation_length, stagger=stagger, worker_sharding=worker_sharding,
                         perturbation_mask=perturbation_mask)
        if unroller.num_particles != 2:
            raise ValueError("antithetic estimators need an Unroller with num_particles=2")
        self.sigma = sigma

    def _draw(self, theta, key) -> jax.Array:
        """Perturbations of flat theta, one per task: (tasks, theta size)."""
        # One draw for all of theta, and flat arithmetic after it: per-leaf draws and updates would
        # each become kernels of their own, and XLA's compile time grows with the number of kernels.
        flat = ravel_pytree(theta)[0]
        eps = self.sigma * jax.random.normal(key, (self.num_tasks, flat.size), flat.dtype)
        if self.perturbation_mask is not None:
            eps = eps * self.perturbation_mask[None]
        return self._split_over_tasks(eps)

    def _unroll_pair(self, theta, eps, workers, data, num_steps, variant_probs):
        """(workers, truncation, L+ - L-) of the runs at theta + eps and theta - eps."""
        flat, unravel = ravel_pytree(theta)
        pairs = jax.vmap(jax.vmap(unravel))(jnp.stack([flat[None] + eps, flat[None] - eps], axis=1))
        workers, truncation = self.unroller.unroll_workers(pairs, workers, data, num_steps, variant_probs)
        difference = truncation.meta_losses[:, 0] - truncation.meta_losses[:, 1]  # (tasks, K)
        return workers, truncation, difference

    def _perturb_and_unroll(self, theta, workers, data, key, num_steps, variant_probs):
        """(eps, workers, truncation, L+ - L-) with a fresh eps."""
        eps = self._draw(theta, key)
        return (eps, *self._unroll_pair(theta, eps, workers, data, num_steps, variant_probs))

    def _old_and_new_run_means(self, truncation, difference):
        """The mean of L+ - L- over the steps of the run under way when the truncation began (until its
        first reset), and over those after it; each (tasks,), both divided by the truncation length."""
        resets = truncation.resets  # (tasks, K)
        in_old_run = (jnp.cumsum(resets, axis=1) - resets) == 0
        return (jnp.sum(difference * in_old_run, axis=1) / self.truncation_length,
                jnp.sum(difference * ~in_old_run, axis=1) / self.truncation_length)

    def _weighted_mean(self, weights, perturbations):
        """mean over tasks of weights[i] * perturbations[i] / (2 sigma^2)."""
        return weights @ perturbations / (2.0 * self.sigma ** 2 * self.num_tasks)


class PES(_Antithetic):
    def init(self, theta, key, variant_probs=None):
        workers = self._init_workers(theta, key, 2, variant_probs=variant_probs)
        flat = ravel_pytree(theta)[0]
        return EstimatorState(workers, jnp.zeros((self.num_tasks, flat.size), flat.dtype))

    def estimate(self, theta, state, data, key, variant_probs=None):
        eps, workers, truncation, difference = self._perturb_and_unroll(
            theta, state.workers, data, key, self.truncation_length, variant_probs)
        mean_old, mean_new = self._old_and_new_run_means(truncation, difference)
        resets = truncation.resets
        accumulated = state.accumulator + eps
        meta_grad = self._weighted_mean(mean_old, accumulated) + self._weighted_mean(mean_new, eps)
        # The run under way after this truncation has seen: nothing if it starts next step, only eps if it
        # began inside this truncation, every perturbation since it began otherwise. ("Nothing" holds
        # because a fresh run's state does not depend on theta: `init_state` reads only the params.)
        began_inside, starts_next = jnp.any(resets, axis=1)[:, None], resets[:, -1:]
        accumulator = jnp.where(starts_next, 0.0, jnp.where(began_inside, eps, accumulated))
        return (unravel_like(theta, meta_grad), EstimatorState(workers, accumulator),
                _metrics(self.unroller, truncation))


class ESSingle(_Antithetic):
    """One perturbation per inner run, kept over all its truncations.

    A run that begins inside a truncation has already stepped with that truncation's eps when it draws
    its own at the next one, so it carries the earlier eps as well and its steps are weighted by the sum
    of the two: still a fixed pair for the rest of the run, where PES's sum grows by one every truncation.
    """

    def init(self, theta, key, variant_probs=None):
        workers = self._init_workers(theta, key, 2, variant_probs=variant_probs)
        flat = ravel_pytree(theta)[0]
        zeros = jnp.zeros((self.num_tasks, flat.size), flat.dtype)
        # (this run's eps, the eps it stepped with before drawing its own, whether it draws at the next estimate)
        return EstimatorState(workers, (zeros, zeros, jnp.ones((self.num_tasks,), bool)))

    def estimate(self, theta, state, data, key, variant_probs=None):
        kept, earlier, draw = state.accumulator
        eps = jnp.where(draw[:, None], self._draw(theta, key), kept)
        workers, truncation, difference = self._unroll_pair(theta, eps, state.workers, data, self.truncation_length,
                                                            variant_probs)
        mean_old, mean_new = self._old_and_new_run_means(truncation, difference)
        meta_grad = self._weighted_mean(mean_old, eps + earlier) + self._weighted_mean(mean_new, eps)
        # A run that starts next step has seen nothing; one that began inside this truncation has seen eps;
        # both draw their own at the next estimate. A run that goes on keeps what it had.
        began_inside, starts_next = jnp.any(truncation.resets, axis=1), truncation.resets[:, -1]
        earlier = jnp.where(starts_next[:, None], 0.0, jnp.where(began_inside[:, None], eps, earlier))
        return (unravel_like(theta, meta_grad), EstimatorState(workers, (eps, earlier, began_inside)),
                _metrics(self.unroller, truncation))


class TruncatedES(_Antithetic):
    """ES on each truncation alone: cheap and low-variance, but biased toward short-horizon behaviour."""

    def init(self, theta, key, variant_probs=None):
        return EstimatorState(self._init_workers(theta, key, 2, variant_probs=variant_probs), ())

    def estimate(self, theta, state, data, key, variant_probs=None):
        eps, workers, truncation, difference = self._perturb_and_unroll(
            theta, state.workers, data, key, self.truncation_length, variant_probs)
        meta_grad = self._weighted_mean(jnp.mean(difference, axis=1), eps)
        return unravel_like(theta, meta_grad), EstimatorState(workers, ()), _metrics(self.unroller, truncation)


class FullES(_Antithetic):
    """ES over whole inner runs from scratch: unbiased, and it costs a full run per estimate.
    The truncation length is the run length (use a constant schedule of that length)."""

    def init(self, theta, key, variant_probs=None):
        return EstimatorState((), ())

    def estimate(self, theta, state, data, key, variant_probs=None):
        init_key, perturb_key = jax.random.split(key)
        workers = self._init_workers(theta, init_key, 2, stagger=False, variant_probs=variant_probs)
        eps, _, truncation, difference = self._perturb_and_unroll(
            theta, workers, data, perturb_key, self.truncation_length, variant_probs)
        meta_grad = self._weighted_mean(jnp.mean(difference, axis=1), eps)
        return unravel_like(theta, meta_grad), state, _metrics(self.unroller, truncation)


class TruncatedBackprop(Estimator):
    """The exact gradient of the truncation's mean meta-loss through the unroll, from a state held fixed
    (cheap; biased like truncated ES, and its variance can explode over long truncations)."""

    def init(self, theta, key, variant_probs=None):
        if self.unroller.num_particles != 1:
            raise ValueError("truncated backprop needs an Unroller with num_particles=1")
        return EstimatorState(self._init_workers(theta, key, 1, variant_probs=variant_probs), ())

    def estimate(self, theta, state, data, key, variant_probs=None):
        del key

        def task_loss(theta, worker):
            thetas = jax.tree.map(lambda t: t[None], theta)  # one particle
            worker, truncation = self.unroller.unroll(thetas, jax.lax.stop_gradient(worker), data,
                                                      self.truncation_length, variant_probs)
            return jnp.mean(truncation.meta_losses), (worker, truncation)

        # Per task, so that one task whose unroll overflowed (0 * inf = NaN flows back through the capped
        # branch) is left out of the mean instead of turning the whole meta-gradient into NaN.
        (_, (workers, truncation)), grads = jax.vmap(
            jax.value_and_grad(task_loss, has_aux=True), in_axes=(None, 0))(theta, state.workers)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g.reshape(self.num_tasks, -1)), axis=1)
                                    for g in jax.tree.leaves(grads)]), axis=0)
        weights = finite / jnp.maximum(jnp.sum(finite), 1)
        meta_grad = jax.tree.map(
            lambda g: jnp.tensordot(weights, jnp.where(finite.reshape((-1,) + (1,) * (g.ndim - 1)), g, 0.0), axes=1),
            grads)
        metrics = _metrics(self.unroller, truncation)
        metrics["nonfinite_gradient_fraction"] = 1.0 - jnp.mean(finite)
        return meta_grad, EstimatorState(workers, ()), metrics


ESTIMATORS = {"pes": PES, "es_single": ESSingle, "truncated_es": TruncatedES, "full_es": FullES, "tbptt": TruncatedBackprop}
