"""The default with a hypergradient step controller (Baydin et al. 2018, per tensor): each tensor's whole
update is multiplied by a scale s that follows the alignment of the new gradient with the last update,

    log s  <-  clip(log s - gain * cos(g_t, u_{t-1}), log 0.05, log 2),

so a tensor whose updates overshoot (the next gradient points along the step just taken) steps less.
The question: can the rule find a conv net's smaller step by itself (the max-pooling conv net's best
whole-step multiplier is 0.3, the others' 1) without losing the models where its step is right?

    python -m benchmarks.step_alignment [--workdir runs/step_alignment] [--gains 1e-9,0.01,0.03,0.1]
    python -m benchmarks.step_alignment --trace
    python -m benchmarks.step_alignment --noise


Runs `evaluate` on the max-pooling conv net, the small conv net and the transformer as the `ood` suite
configures them, the gain tuned like a learning rate (chosen on tuning seeds 1000-1001, reported on
seeds 0-2; a gain of 1e-9 is the rule unchanged: it moves log s by at most 1e-6 in a run), and prints
each gain's mean final losses on the tuning seeds. Runs are cached as a user optimizer's are
(`evaluate.optimizer`), so a rerun with the same gains reads them back. --trace instead prints what the
controller would read, the rule unchanged: the mean over matrices of cos(g_t, u_{t-1}) in 100-step
windows of one run of each model (its init and batches drawn from seed 1000) at the whole-step
multipliers TRACED, and beside it a second candidate signal, the trust ratio (the fall of the windows'
mean loss over the fall the steps' g_t . u_t predicted). --noise prints a third candidate, a per-tensor
measure of gradient noise: the RMS over a conv kernel's entries of Adam's m / sqrt(v) (decays 0.9 and
0.999, bias-corrected; about 1 for a steady gradient, about 0.23 for pure noise), in 100-step windows of
one run (seed 2000) of each conv net of NOISE_SUITES, at conv-kernel step multipliers NOISE_CONV_STEPS.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import evaluate
import lopt
from evaluate.optimizers import code_digest, theta_digest
from evaluate.suites import from_file
from lopt.normalized_mlp import scale_by_tensor

SUITES = Path(__file__).parent / "suites"
SUITE = SUITES / "step_alignment.json"
LOG_SCALE_RANGE = (math.log(0.05), math.log(2.0))
TRACED = {"conv max-pool 3x32 mnist 14x14": (1.0, 0.3), "conv mnist 8x8": (1.0, 0.3), "transformer shakespeare": (1.0, 2.0)}
WINDOW = 100
NOISE_SUITES = ("ood_convs.json", "conv_pooling.json", "in_distribution_convs.json")
NOISE_CONV_STEPS = (1.0, 0.5)


def cosine(a, b):
    return jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b) + 1e-30)


def with_step_alignment(inner: optax.GradientTransformationExtraArgs, gain) -> optax.GradientTransformationExtraArgs:
    """inner's updates, each tensor's times its hypergradient-controlled scale (module docstring)."""
    def init(params):
        return (inner.init(params), jax.tree.map(jnp.zeros_like, params),
                jax.tree.map(lambda leaf: jnp.zeros((), jnp.float32), params))

    def update(grads, state, params=None, **extra_args):
        inner_state, last_updates, log_scales = state

        log_scales = jax.tree.map(lambda log_scale, grad, last: jnp.clip(log_scale - gain * cosine(grad, last),
                                                                          *LOG_SCALE_RANGE),
                                  log_scales, grads, last_updates)
        updates, inner_state = inner.update(grads, inner_state, params, **extra_args)
        updates = jax.tree.map(lambda u, log_scale: u * jnp.exp(log_scale), updates, log_scales)
        return updates, (inner_state, updates, log_scales)
    return optax.GradientTransformationExtraArgs(init, update)


def trace(suite: evaluate.Suite, label: str, multiplier: float, seed: int = 1000) -> None:
    """Prints the mean over matrices of cos(g_t, u_{t-1}) and the mean loss in each window of one run."""
    task_config = next(entry for entry in suite.tasks if entry.label == label)
    task, num_steps = task_config.config.build(), task_config.num_steps
    params = task.init(jax.random.PRNGKey(seed))
    tx = optax.chain(lopt.load(lopt.DEFAULT, num_steps=num_steps, roles=task.roles(params)), optax.scale(multiplier))

    @jax.jit
    def step(params, state, last_updates, key):
        batch_key, loss_key = jax.random.split(key)
        loss, grads = jax.value_and_grad(task.loss)(params, task.batch(task.data, batch_key), loss_key)
        alignment = jnp.mean(jnp.stack([cosine(g, u) for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(last_updates))
                                        if g.ndim >= 2]))
        updates, state = tx.update(grads, state, params, loss=loss)
        predicted = sum(jnp.vdot(g, u) for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(updates)))
        return optax.apply_updates(params, updates), state, updates, loss, alignment, predicted

    state, last_updates, key = tx.init(params), jax.tree.map(jnp.zeros_like, params), jax.random.PRNGKey(seed + 1)
    losses, alignments, predicted = [], [], []
    for key in jax.random.split(key, num_steps):
        params, state, last_updates, loss, alignment, first_order = step(params, state, last_updates, key)
        losses.append(float(loss))
        alignments.append(float(alignment))
        predicted.append(float(first_order))
    means = [statistics.fmean(losses[start:start + WINDOW]) for start in range(0, num_steps, WINDOW)]
    # The trust ratio: how far the window's mean loss fell into the next window's, over the fall the steps
    # between the two windows' centres predicted to first order (the sum of their minibatch g_t . u_t):
    # near 1 in the linear regime.
    half = WINDOW // 2
    ratios = [(means[k + 1] - means[k]) / sum(predicted[k * WINDOW + half:(k + 1) * WINDOW + half])
              for k in range(len(means) - 1)]
    print(f"{label} at x{multiplier}: " + "; ".join(
        f"{k * WINDOW}: loss {means[k]:.3f} "
        f"cos {statistics.fmean(alignments[max(k * WINDOW, 1):(k + 1) * WINDOW]):+.3f}"  # step 0 has no last update
        + (f" trust {ratios[k]:+.2f}" if k < len(ratios) else "")
        for k in range(len(means))))


def trace_noise(entry, conv_step: float, seed: int = 2000) -> None:
    """Prints each conv kernel's (and the readout's) mean RMS of Adam's m / sqrt(v) in each window of one
    run of the default, its conv kernels' steps times conv_step."""
    task, num_steps = entry.config.build(), entry.num_steps
    params = task.init(jax.random.PRNGKey(seed))
    tx = optax.chain(lopt.load(lopt.DEFAULT, num_steps=num_steps, roles=task.roles(params)),
                     scale_by_tensor(lambda path, leaf: conv_step if leaf.ndim >= 4 else 1.0))
    adam = optax.scale_by_adam(0.9, 0.999)
    names = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_leaves_with_path(params) if leaf.ndim >= 2]

    @jax.jit
    def step(params, state, adam_state, key):
        batch_key, loss_key = jax.random.split(key)
        loss, grads = jax.value_and_grad(task.loss)(params, task.batch(task.data, batch_key), loss_key)
        adam_direction, adam_state = adam.update(grads, adam_state)
        noise = jnp.stack([jnp.sqrt(jnp.mean(jnp.square(d))) for d in jax.tree.leaves(adam_direction) if d.ndim >= 2])
        updates, state = tx.update(grads, state, params, loss=loss)
        return optax.apply_updates(params, updates), state, adam_state, noise

    state, adam_state, noises = tx.init(params), adam.init(params), []
    for key in jax.random.split(jax.random.PRNGKey(seed + 1), num_steps):
        params, state, adam_state, noise = step(params, state, adam_state, key)
        noises.append(noise)
    windows = jnp.stack(noises).reshape(-1, WINDOW, len(names)).mean(axis=1)  # (window, tensor)
    print(f"{entry.label}, conv step x{conv_step}, RMS of m / sqrt(v) per {WINDOW}-step window:")
    for index, name in enumerate(names):
        print(f"  {name}: " + " ".join(f"{value:.2f}" for value in windows[:, index].tolist()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_alignment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="runs/step_alignment")
    parser.add_argument("--gains", default="1e-9,0.01,0.03,0.1", help="comma-separated positive gains tried")
    parser.add_argument("--trace", action="store_true", help="print the alignment along one run of each model")
    parser.add_argument("--noise", action="store_true", help="print each conv net's gradient noise along one run")
    args = parser.parse_args(argv)
    if args.noise:
        for conv_step in NOISE_CONV_STEPS:
            for suite_file in NOISE_SUITES:
                for entry in from_file(SUITES / suite_file).tasks:
                    trace_noise(entry, conv_step)
        return
    if args.trace:
        suite = from_file(SUITE)
        for label, multipliers in TRACED.items():
            for multiplier in multipliers:
                trace(suite, label, multiplier)
        return
    gains = tuple(float(gain) for gain in args.gains.split(","))
    # The runs are cached under the version: it names the default's theta and the rule's code, so a changed
    # default is run anew.
    optimizer, theta, _ = lopt.load_optimizer(lopt.DEFAULT)
    controlled = evaluate.optimizer(
        "align", lambda gain, num_steps, roles: with_step_alignment(lopt.load(lopt.DEFAULT, num_steps=num_steps, roles=roles),
                                                                    gain), rates=gains,
        version=f"{lopt.DEFAULT} theta {theta_digest(theta)} code {code_digest(optimizer)}")
    evaluate.run_suite([controlled], SUITE, args.workdir, baselines=[])
    finals = collections.defaultdict(list)  # (task, gain) -> [(train, valid)], one per tuning seed
    for run in json.loads((Path(args.workdir) / "runs.json").read_text()):
        if run["split"] == "tuning":
            finals[(run["task"], run["candidate"])].append((run["train_loss"][-1], run["valid_loss"][-1]))
    print("| task | gain | train loss | valid loss |\n| --- | --- | --- | --- |")
    for (task, candidate), losses in sorted(finals.items(), key=lambda item: (item[0][0], float(item[0][1][3:]))):
        train, valid = (statistics.fmean(values) for values in zip(*losses))
        print(f"| {task} | {candidate.removeprefix('lr=')} | {train:.4g} | {valid:.4g} |")


if __name__ == "__main__":
    main()
