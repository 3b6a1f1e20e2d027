"""A per-parameter MLP update rule whose output is RMS-normalized per tensor, inside an ordinary Optax
harness (after Celo2: Moudgil, Knyazev and Belilovsky, ICLR 2026).

The learned part sets each tensor's update direction and the relative sizes within it; the size of the
step comes from the harness's learning-rate schedule, as for Adam or Muon:

    optax.chain(optimizer.rule(theta, num_steps, roles),         # the learned direction of every tensor
                optax.add_decayed_weights(weight_decay),
                optax.scale_by_learning_rate(warmup_decay(schedule, peak, num_steps)))

which is what `transform` returns, with the peak learning rate and the weight decay that meta-training
learned (theta holds them) and the decay that `schedule` names (cosine or linear to 0, after a warmup).
The rule, with optax.partition by tensor kind:
- matrices (every tensor of at least 2 dimensions): a small ReLU MLP reads 8 features of each entry
  (gradient, parameter, momentum at 3 decays, momentum / sqrt(second moment) at those decays, put on
  one scale per tensor: each by its own RMS, estimated on a sample of the tensor's entries with
  `feature_sample`, or with feature_normalization="shared" by two shared scales, see
  shared_feature_scales) and the fraction of the run done (with `snr_inputs`, the tensor's gradient
  signal-to-noise ratio too); its output is divided by its RMS over the
  tensor and multiplied by `consistent_rms`, so every matrix moves by the same RMS whatever the task.
- hidden matrices (muP role "hidden"; with no roles, every matrix), with `orthogonalize`: that direction
  is then orthogonalized by Newton-Schulz (optax.contrib.scale_by_muon with no momentum of its own) and
  rescaled to the same RMS, as Muon's consistent-RMS rule does.
- vectors and scalars (biases, norm weights): Adam's direction (optax.scale_by_adam).
With `width_scaling`, step sizes follow the spectral condition (Yang, Simon and Bernstein 2023) as
widths change, in a standard-parameterized model: output and un-orthogonalized hidden matrices' steps
are multiplied by REFERENCE_WIDTH / fan_in, orthogonalized hidden matrices get a spectral norm of
sqrt(max(1, fan_out / fan_in)) (optax's width-transfer rule) instead of a fixed RMS, input matrices keep
their RMS; at REFERENCE_WIDTH every matrix moves by `consistent_rms`, as without it.
Each kind has a learned log step multiplier (input and output matrices share one without width
scaling). Two kinds of matrix take a fixed extra factor on top of their role's (`conv_step`,
`embedding_step`; 1 in theta's start and the former checkpoints): 2-D (and 3-D) convolution kernels (4 or
more axes: spatial ones beside fan-in and fan-out, as flax.linen.Conv lays them out; 3-axis tensors are
left alone, as flax's attention keeps its (features, heads, head_dim) projections in them) and embedding
tables (a 2-axis tensor whose name contains "embed", as flax.linen.Embed's "embedding"). The consistent
RMS sizes their steps like a dense layer's, although tuned optimizers take several times larger ones
there. The MLP starts as Adam's direction (two of its units carry the momentum / sqrt(second moment)
feature), so an untrained theta is a normalized Adam (with orthogonalize, a Muon on Adam's direction)
that meta-training refines.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt import accumulators as acc
from lopt import fit_decay as fit
from lopt import harness, mup
from lopt.base import LearnedOptimizer, check_parameterization, check_positive_integers
from lopt.mlp_lopt import adam_like, init_mlp, mlp_output_units, rms_scales

NUM_FEATURES = 8  # gradient, parameter, 3 momenta, 3 momenta * rsqrt(second moment)
RATIO_FEATURES = slice(5, 8)  # the 3 momentum * rsqrt(second moment) columns
NUM_SNR_INPUTS = 3  # snr_inputs: one per momentum decay
ADAM_FEATURE = 6  # momentum(decay 0.9) * rsqrt(second moment): where the MLP starts
# theta["log_group_scales"] holds one learned multiplier per group of tensors (the partition labels them
# hidden, input, output or vector); without width scaling, input and output matrices share one ("matrix").
GROUPS = ("hidden", "matrix", "vector")
WIDTH_GROUPS = ("hidden", "input", "output", "vector")
# width_scaling: the width at which a matrix's step RMS is `consistent_rms`, whatever its role.
REFERENCE_WIDTH = 128
MAX_LOG_MAGNITUDE = 2.0  # tensor_magnitude: the multiplier stays within [e^-2, e^2]
SECOND_MOMENT_EPS = 1e-20  # keeps rsqrt finite at a zero gradient without biasing tiny gradients
FEATURE_NORMALIZATIONS = ("feature", "shared")
PARAMETER_EPS = 1e-5  # the parameter feature's scale is rsqrt(PARAMETER_EPS + mean p^2), as with "feature"


class DirectionState(NamedTuple):
    momentum: Any  # per tensor, shape + (3,)
    second_moment: Any  # per tensor, shape + (1,)
    iteration: jax.Array  # int32, steps taken
    num_steps: jax.Array  # int32, the training horizon


@dataclasses.dataclass(frozen=True)
class NormalizedMLPLOpt(LearnedOptimizer):
    """The learned rule (per-parameter MLP, per-tensor RMS-normalized output) and its Optax harness."""

    architecture = "normalized_mlp"
    hidden_size: int = 8  # units of each hidden layer of the per-parameter MLP (Celo2: 8)
    hidden_layers: int = 2
    parameterization: str = "sp"  # "mup": un-orthogonalized hidden steps are divided by fan_in
    orthogonalize: bool = True  # hidden matrices' directions orthogonalized by Newton-Schulz
    momentum_decays: tuple[float, ...] = (0.5, 0.9, 0.99)  # initial decays, meta-learned as offsets
    second_moment_decay: float = 0.999  # initial decay, meta-learned as an offset
    consistent_rms: float = 0.2  # the RMS of a matrix's direction (Adam's typical update RMS, as Muon's rule)
    initial_learning_rate: float = 0.01  # the schedule's peak that theta starts from
    initial_weight_decay: float = 0.01  # decoupled weight decay (times the learning rate) theta starts from
    width_scaling: bool = False  # step sizes follow the spectral condition as widths change (below)
    tensor_magnitude: bool = False  # a learned per-tensor step multiplier: the mean of a second MLP output
    # How the MLP's inputs are put on one scale per tensor: "feature", each of the 8 by its own RMS (8
    # reductions over the tensor); "shared", the gradient and momenta by the bias-corrected second
    # moment's RMS and momentum / sqrt(second moment) by its bias correction only (2 reductions: about
    # half the update's time, see the README's update cost).
    feature_normalization: str = "feature"
    # "feature" normalization: each feature's RMS over a tensor is estimated on at most this many of its
    # entries, evenly spread (0: all of them). Each exact RMS is a pass over the tensor (see the
    # README's update cost); a sample of 16,384 entries puts the estimate within about 1%.
    feature_sample: int = 0
    # Each tensor's gradient signal-to-noise ratio as 3 more MLP inputs shared by its entries: the log of
    # the bias-corrected RMS of momentum / sqrt(second moment) at the 3 momentum decays (0 for a steady
    # gradient, about log sqrt((1 - decay) / (1 + decay)) for pure noise). The per-feature
    # normalization divides exactly this out of the ratio features, so without it the rule cannot tell a
    # tensor whose gradient is mostly noise (converged, or fitting its minibatches) from one still
    # descending. Its weights start at 0: an untrained theta ignores it.
    snr_inputs: bool = False
    # The weight decay grows once the training loss has fallen many e-folds below its first value (the
    # sign of memorizing the training set that the training loss carries; lopt.fit_decay), by a response
    # whose gain and knee theta holds (theta["fit_decay"], gain 0 at the start: plain decay). The
    # optimizer's update then needs loss=.
    fit_decay: bool = False
    # fit_decay: the gain theta starts from (0: plain decay until meta-training moves it; the shipped
    # default's theta holds 2, chosen on the family's memorizing models).
    initial_fit_gain: float = 0.0
    # The step of convolution kernels and of embedding tables, times their role's learned multiplier
    # (see the module docstring). A setting of the spec, not theta: chosen on the meta-training family.
    conv_step: float = 1.0
    embedding_step: float = 1.0
    # The learning rate's decay to 0 after warmup (harness.SCHEDULES): "cosine", as meta-training ran it,
    # or "linear". A setting of the spec, not theta: the peak theta holds stays what it was.
    schedule: str = "cosine"

    def __post_init__(self):
        check_parameterization(self)
        check_positive_integers(self, "hidden_size", "hidden_layers")
        if not isinstance(self.feature_sample, int) or self.feature_sample < 0:
            raise ValueError(f"NormalizedMLPLOpt.feature_sample={self.feature_sample!r}: a count of entries, "
                             "or 0 for all of them")
        object.__setattr__(self, "momentum_decays", tuple(self.momentum_decays))  # JSON gives lists back
        if len(self.momentum_decays) != 3 or not all(0 <= d < 1 for d in self.momentum_decays):
            raise ValueError(f"NormalizedMLPLOpt.momentum_decays={self.momentum_decays!r}: three decays in [0, 1)")
        if not 0 <= self.second_moment_decay < 1:
            raise ValueError(f"NormalizedMLPLOpt.second_moment_decay={self.second_moment_decay!r}: must be in [0, 1)")
        if self.feature_normalization not in FEATURE_NORMALIZATIONS:
            raise ValueError(f"NormalizedMLPLOpt.feature_normalization={self.feature_normalization!r}: "
                             f"one of {', '.join(FEATURE_NORMALIZATIONS)}")
        if self.schedule not in harness.SCHEDULES:
            raise ValueError(f"NormalizedMLPLOpt.schedule={self.schedule!r}: one of {', '.join(harness.SCHEDULES)}")
        for field in ("orthogonalize", "width_scaling", "tensor_magnitude", "snr_inputs", "fit_decay"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"NormalizedMLPLOpt.{field}={getattr(self, field)!r}: must be True or False")
        if not (isinstance(self.initial_fit_gain, (int, float)) and math.isfinite(self.initial_fit_gain)):
            raise ValueError(f"NormalizedMLPLOpt.initial_fit_gain={self.initial_fit_gain!r}: must be a finite number")
        if self.snr_inputs and self.feature_normalization != "feature":
            raise ValueError("NormalizedMLPLOpt: snr_inputs=True reads the ratios' per-tensor RMS, which only "
                             "feature_normalization='feature' computes")
        if self.orthogonalize and self.parameterization == "mup":
            raise ValueError("NormalizedMLPLOpt: orthogonalize=True sets the hidden steps' size by their shape "
                             "(Muon's rule), not by muP's 1/fan_in; use parameterization='sp', or orthogonalize=False")
        if self.width_scaling and self.parameterization == "mup":
            raise ValueError("NormalizedMLPLOpt: width_scaling=True sizes steps for standard-parameterized models "
                             "(the spectral condition); a muP model takes muP's own rule: set width_scaling=False")
        for field in ("consistent_rms", "initial_learning_rate", "initial_weight_decay", "conv_step", "embedding_step"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and 0 <= value < math.inf) or (value == 0 and field != "initial_weight_decay"):
                raise ValueError(f"NormalizedMLPLOpt.{field}={value!r}: must be positive and finite")

    def init(self, key):
        outputs = 2 if self.tensor_magnitude else 1
        inputs = NUM_FEATURES + 1 + (NUM_SNR_INPUTS if self.snr_inputs else 0)  # features, time, SNR
        layers = adam_like(init_mlp(key, [inputs] + [self.hidden_size] * self.hidden_layers + [outputs]),
                           feature=ADAM_FEATURE)
        if self.snr_inputs:
            first = layers["layer_0"]
            layers["layer_0"] = {"w": first["w"].at[NUM_FEATURES + 1:].set(0.0), "b": first["b"]}
        if self.tensor_magnitude:  # the magnitude output starts at 0: a multiplier of 1
            last = f"layer_{self.hidden_layers}"
            layers[last] = {"w": layers[last]["w"].at[:, 1].set(0.0), "b": layers[last]["b"]}
        theta = {"mlp": layers,
                 "momentum_decays": jnp.zeros((3,)), "second_moment_decays": jnp.zeros((1,)),
                 "log_group_scales": jnp.zeros((len(self.groups),)),
                 "log_learning_rate": jnp.asarray(math.log(self.initial_learning_rate), jnp.float32),
                 "log_weight_decay": jnp.asarray(math.log(max(self.initial_weight_decay, 1e-8)), jnp.float32)}
        if self.fit_decay:  # (gain, knee offset): gain 0 is plain decay
            theta["fit_decay"] = jnp.asarray([self.initial_fit_gain, 0.0], jnp.float32)
        return theta

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups with a learned step multiplier, in theta["log_group_scales"] order."""
        return WIDTH_GROUPS if self.width_scaling else GROUPS

    def learning_rate(self, theta) -> jax.Array:
        """The peak of the learning-rate schedule that meta-training learned."""
        return jnp.exp(jnp.asarray(theta["log_learning_rate"]))

    def weight_decay(self, theta) -> jax.Array:
        return jnp.exp(jnp.asarray(theta["log_weight_decay"]))

    # --- the learned direction of the matrices: the inner step the interface names ---
    def init_state(self, theta, params, num_steps):
        del theta
        return DirectionState(jax.tree.map(lambda p: jnp.zeros(p.shape + (3,), jnp.float32), params),
                              jax.tree.map(lambda p: jnp.zeros(p.shape + (1,), jnp.float32), params),
                              jnp.asarray(0, jnp.int32), jnp.asarray(num_steps, jnp.int32))

    def step(self, theta, grads, state, params, loss):
        """Each tensor's direction as an input matrix gets it (RMS-normalized to `consistent_rms`,
        ascent-signed like scale_by_adam's output), and the next state."""
        del loss
        return self._step(theta, grads, state, params, "input")

    def _step(self, theta, grads, state, params, kind: str):
        """The directions of tensors of one kind ("hidden", "input" or "output" matrices)."""
        momentum_decays = acc.learned_decays(self.momentum_decays, theta["momentum_decays"])
        second_moment_decays = acc.learned_decays((self.second_moment_decay,), theta["second_moment_decays"])
        layers = theta["mlp"]
        fraction = jnp.asarray(state.iteration, jnp.float32) / jnp.maximum(state.num_steps, 1)
        first = layers["layer_0"]
        time_bias = fraction * first["w"][NUM_FEATURES] + first["b"]  # the same for every entry
        # Adam's bias corrections at this step (shared normalization, snr_inputs), by the decays theta learned.
        count = jnp.asarray(state.iteration, jnp.float32) + 1.0
        momentum_correction = 1.0 / (1.0 - momentum_decays ** count)
        second_moment_correction = 1.0 / (1.0 - jnp.clip(second_moment_decays, 0.0, 1.0) ** count)

        def one(grad, param, momentum, second_moment):
            momentum = acc.update_momentum(momentum, grad, momentum_decays)
            second_moment = acc.update_second_moment(second_moment, grad, second_moment_decays)
            blocks = features(grad, param, momentum, second_moment)
            scales = None  # each feature by its own RMS over the whole tensor
            if self.feature_normalization == "shared":
                scales = shared_feature_scales(param, second_moment, momentum_correction, second_moment_correction)
            elif 0 < self.feature_sample < grad.size:  # the same RMS of the same features, on a sample's entries
                scales = rms_scales(features(*(sampled(x, grad.shape, self.feature_sample)
                                               for x in (grad, param, momentum, second_moment))))
            elif self.snr_inputs:  # computed here, as mlp_output_units would, to read the ratios' RMS off
                scales = rms_scales(blocks)
            bias = time_bias
            if self.snr_inputs:
                bias = bias + log_snr(scales, momentum_correction, second_moment_correction) @ first["w"][NUM_FEATURES + 1:]
            outputs = mlp_output_units(layers, blocks, bias, scales)
            direction = self._sized(outputs[0], kind)
            if self.tensor_magnitude:  # bounded to a factor of e^MAX_LOG_MAGNITUDE either way
                log_magnitude = MAX_LOG_MAGNITUDE * jnp.tanh(jnp.mean(outputs[1]) / MAX_LOG_MAGNITUDE)
                direction = direction * jnp.exp(log_magnitude)
            return direction, momentum, second_moment

        out = jax.tree.map(one, grads, params, state.momentum, state.second_moment)
        pick = lambda index: jax.tree.map(lambda _, o: o[index], grads, out)  # noqa: E731
        return pick(0), DirectionState(pick(1), pick(2), state.iteration + 1, state.num_steps)

    def _sized(self, direction, kind: str):
        """The MLP's direction for one matrix of a kind, at the RMS (or spectral norm) its kind takes."""
        if kind == "hidden" and self.orthogonalize:
            return _orthogonalized(direction, self.consistent_rms, self.width_scaling)
        rms = jnp.sqrt(jnp.mean(jnp.square(direction)))
        direction = direction * (self.consistent_rms / jnp.maximum(rms, 1e-30))
        if kind == "hidden" and self.parameterization == "mup":
            return direction / mup.fan_in(direction)  # muP's hidden-layer rule (muLO)
        if kind in ("hidden", "output") and self.width_scaling:
            # A low-rank step of RMS r on a fan_in x fan_out matrix has spectral norm about
            # r sqrt(fan_in fan_out); the spectral condition asks for sqrt(fan_out / fan_in): r ~ 1 / fan_in.
            return direction * (REFERENCE_WIDTH / mup.fan_in(direction))
        return direction

    def _directions(self, theta, num_steps, kind: str) -> optax.GradientTransformation:
        def update_fn(grads, state, params=None):
            if params is None:
                raise ValueError(f"{self.architecture} needs params: call update(grads, state, params)")
            return self._step(theta, grads, state, params, kind)
        return optax.GradientTransformation(lambda params: self.init_state(theta, params, num_steps), update_fn)

    # --- the harness ---
    def labels(self, roles=None):
        """params -> each tensor's label: "hidden", "input" or "output" (matrices by muP role), "vector"."""
        def label(role, leaf):
            if len(leaf.shape) < 2:
                return "vector"
            return "hidden" if harness.is_hidden_matrix(role, leaf) else "output" if role == "output" else "input"
        if roles is None:
            return lambda params: jax.tree.map(lambda leaf: label(None, leaf), params)
        return lambda params: jax.tree.map(label, roles, params)

    def rule(self, theta, num_steps, roles=None) -> optax.GradientTransformation:
        """The learned direction of every tensor, before weight decay and the learning rate: chain it with
        optax.add_decayed_weights and optax.scale_by_learning_rate(any schedule), as optax.adamw chains
        scale_by_adam. roles: each tensor's muP role (which matrices are hidden); None treats every
        matrix as hidden, as optax.contrib.muon does without dimension numbers."""
        scales = dict(zip(self.groups, jnp.exp(jnp.asarray(theta["log_group_scales"]))))
        if not self.width_scaling:
            scales["input"] = scales["output"] = scales["matrix"]
        transforms = {kind: optax.chain(self._directions(theta, num_steps, kind), optax.scale(scales[kind]))
                      for kind in ("hidden", "input", "output")}
        transforms["vector"] = optax.chain(optax.scale_by_adam(), optax.scale(scales["vector"]))
        rule = optax.partition(transforms, self.labels(roles))
        if self.conv_step == 1 and self.embedding_step == 1:
            return rule
        return optax.chain(rule, scale_by_tensor(self.kind_step))

    def kind_step(self, path, leaf) -> float:
        """The fixed factor of one tensor's step: conv_step for a convolution kernel, embedding_step for
        an embedding table, else 1 (vectors always 1)."""
        rank = len(getattr(leaf, "shape", ()))
        if rank >= 4:
            return self.conv_step
        if rank == 2 and path and "embed" in _key_name(path[-1]).lower():
            return self.embedding_step
        return 1.0

    def transform(self, theta, num_steps, roles=None) -> optax.GradientTransformationExtraArgs:
        """The rule with the weight decay and the schedule's peak learning rate that theta holds: the
        optimizer meta-training trains and users load."""
        weight_decay = self.weight_decay(theta)
        decay = (fit.fit_decayed_weights(weight_decay, *jnp.asarray(theta["fit_decay"])) if self.fit_decay
                 else optax.add_decayed_weights(weight_decay))
        chain = optax.chain(self.rule(theta, num_steps, roles), decay,
                            optax.scale_by_learning_rate(harness.warmup_decay(self.schedule, self.learning_rate(theta),
                                                                              num_steps)))
        return self.as_optax(chain.init, lambda grads, state, params, loss: chain.update(grads, state, params, loss=loss),
                             roles)


def scale_by_tensor(factor) -> optax.GradientTransformation:
    """Each update times factor(path, leaf), a Python float fixed by the tensor's name and shape."""
    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map_with_path(
            lambda path, u: u if (f := factor(path, u)) == 1 else u * f, updates), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _key_name(key) -> str:
    """A pytree path entry's name: a dict key, an attribute or a sequence index."""
    for field in ("key", "name", "idx"):
        if hasattr(key, field):
            return str(getattr(key, field))
    return str(key)


def features(grad, param, momentum, second_moment) -> list[jax.Array]:
    """The MLP's 8 raw features of each entry, as blocks of shape + (k,): gradient, parameter, the 3
    momenta, and momentum / sqrt(second moment) at the 3 decays."""
    adam = momentum * jax.lax.rsqrt(second_moment + SECOND_MOMENT_EPS)
    return [grad[..., None], param[..., None], momentum, adam]


def log_snr(scales, momentum_correction, second_moment_correction) -> jax.Array:
    """snr_inputs: the log of the bias-corrected RMS of momentum / sqrt(second moment) at each momentum
    decay, shape (3,), read off the features' per-tensor scales (1 / each feature's RMS)."""
    corrected_rms = momentum_correction * jax.lax.rsqrt(second_moment_correction) / scales[RATIO_FEATURES]
    return jnp.log(jnp.maximum(corrected_rms, 1e-6))


def sampled(x, param_shape: tuple[int, ...], count: int):
    """At most `count` entries of a tensor of shape param_shape, or of a statistic of it (param_shape +
    (k,)), flattened to (n,) or (n, k): every entry if there are at most `count`, else evenly spread at a
    stride coprime with the last axis, so that every column is visited."""
    total = math.prod(param_shape)
    flat = x.reshape((total,) + x.shape[len(param_shape):])
    if total <= count:
        return flat
    stride = total // count
    while math.gcd(stride, param_shape[-1]) > 1:
        stride += 1
    return flat[::stride][:count]


def shared_feature_scales(param, second_moment, momentum_correction, second_moment_correction) -> jax.Array:
    """The multipliers of the 8 features (gradient, parameter, 3 momenta, 3 momentum / sqrt(second
    moment)) under feature_normalization="shared": the gradient and the momenta by the gradient's RMS
    that the bias-corrected second moment gives, the parameter by its own RMS, and the ratios, scale-free
    already, by Adam's bias corrections only. Two reductions over the tensor, where one per feature
    costs twice the update's time."""
    grad_scale = jax.lax.rsqrt(jnp.mean(second_moment) * second_moment_correction + SECOND_MOMENT_EPS)
    return jnp.concatenate([grad_scale, jax.lax.rsqrt(PARAMETER_EPS + jnp.mean(jnp.square(param)))[None],
                            momentum_correction * grad_scale,
                            momentum_correction * jax.lax.rsqrt(second_moment_correction)])


def _orthogonalized(direction, rms: float, width_scaling: bool):
    """The direction orthogonalized by Newton-Schulz (optax.contrib.scale_by_muon with no momentum of its
    own, so its state is a throwaway) at RMS `rms`: an orthogonal m x n matrix has RMS about
    1 / sqrt(max(m, n)) (Moonshot's consistent-RMS rule). With width scaling, at a spectral norm of
    sqrt(max(1, fan_out / fan_in)) instead (optax's width-transfer rule, the spectral condition of Yang,
    Simon and Bernstein), times the constant that gives RMS `rms` at REFERENCE_WIDTH x REFERENCE_WIDTH."""
    orthogonalize = optax.contrib.scale_by_muon(beta=0.0, nesterov=False,
                                                weight_dimension_numbers=harness.matrix_dimension_numbers(direction))
    orthogonal, _ = orthogonalize.update(direction, orthogonalize.init(direction))
    fan_in, fan_out = math.prod(direction.shape[:-1]), direction.shape[-1]
    if width_scaling:
        return orthogonal * (math.sqrt(max(1.0, fan_out / fan_in)) * rms * math.sqrt(REFERENCE_WIDTH))
    return orthogonal * (math.sqrt(max(fan_in, fan_out)) * rms)
