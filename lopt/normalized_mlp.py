"""A per-parameter MLP update rule whose output is RMS-normalized per tensor, inside an ordinary Optax
harness (after Celo2: Moudgil, Knyazev and Belilovsky, ICLR 2026).

The learned part sets each tensor's update direction and the relative sizes within it; the size of the
step comes from the harness's learning-rate schedule, as for Adam or Muon:

    optax.chain(optimizer.rule(theta, num_steps, roles),         # the learned direction of every tensor
                optax.add_decayed_weights(weight_decay),
                optax.scale_by_learning_rate(warmup_decay(schedule, peak, num_steps)))

which is what `transform` returns, with the peak learning rate and the weight decay that meta-training
learned (theta holds them; `learning_rate_scale` and `weight_decay` change them) and the decay that
`schedule` names (cosine or linear to 0, after a warmup). Past `num_steps` the learning rate stays 0:
the run is over, and a longer one needs a transform built for its own length.
The rule, with optax.partition by tensor kind:
- matrices (every tensor of at least 2 dimensions): a small ReLU MLP reads 8 features of each entry
  (gradient, parameter, momentum at 3 decays, momentum / sqrt(second moment) at those decays, put on
  one scale per tensor: each by its own RMS, estimated on a sample of the tensor's entries with
  `feature_sample`) and the fraction of the run done; its output is divided by its RMS over the tensor and multiplied by `consistent_rms`, so every matrix moves by the same RMS whatever the task.
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
`embedding_step`; 1 in theta's start): 2-D (and 3-D) convolution kernels (4 or
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
from lopt.declare import setting
from lopt.base import LearnedOptimizer, SpecError, check_parameterization, check_positive_integers
from lopt.mlp_lopt import adam_like, init_mlp, mlp_output_units, rms_scales

NUM_FEATURES = 8  # gradient, parameter, 3 momenta, 3 momenta * rsqrt(second moment)
ADAM_FEATURE = 6  # momentum(decay 0.9) * rsqrt(second moment): where the MLP starts
# theta["log_group_scales"] holds one learned multiplier per group of tensors (the partition labels them
# hidden, input, output or vector); without width scaling, input and output matrices share one ("matrix").
GROUPS = ("hidden", "matrix", "vector")
WIDTH_GROUPS = ("hidden", "input", "output", "vector")
# width_scaling: the width at which a matrix's step RMS is `consistent_rms`, whatever its role.
REFERENCE_WIDTH = 128
SECOND_MOMENT_EPS = 1e-20  # keeps rsqrt finite at a zero gradient without biasing tiny gradients
MAX_ROW = 1024  # mean_squares: the longest run of entries summed one after another


class DirectionState(NamedTuple):
    momentum: Any  # per tensor, (3,) + shape: each decay's momentum contiguous, as the MLP reads it
    second_moment: Any  # per tensor, shape
    iteration: jax.Array  # int32, steps taken
    num_steps: jax.Array  # int32, the training horizon


@dataclasses.dataclass(frozen=True)
class NormalizedMLPLOpt(LearnedOptimizer):
    """The learned rule (per-parameter MLP, per-tensor RMS-normalized output) and its Optax harness."""

    architecture = "normalized_mlp"
    harness_settings = ("schedule", "learning_rate_scale", "weight_decay", "fit_decay", "initial_fit_gain",
                        "conv_step", "embedding_step", "feature_sample")
    hidden_size: int = setting(8, "units of each hidden layer of the per-parameter MLP (Celo2: 8)")
    hidden_layers: int = setting(2, "ReLU hidden layers of the per-parameter MLP")
    parameterization: str = setting("sp", "'sp', or 'mup': un-orthogonalized hidden steps divided by fan_in")
    orthogonalize: bool = setting(True, "hidden matrices' directions orthogonalized by Newton-Schulz (as Muon)")
    momentum_decays: tuple[float, ...] = setting((0.5, 0.9, 0.99), "initial momentum decays (meta-learned as offsets)")
    second_moment_decay: float = setting(0.999, "initial second-moment decay (meta-learned as an offset)")
    consistent_rms: float = setting(0.2, "the RMS of a matrix's direction (Adam's typical update RMS, as Muon's rule)")
    initial_learning_rate: float = setting(0.01, "the schedule's peak theta starts from (then meta-learned)")
    initial_weight_decay: float = setting(0.01, "the decoupled weight decay theta starts from (then meta-learned)")
    width_scaling: bool = setting(False, "step sizes follow the spectral condition as widths change (sp models)")
    # Each exact RMS is a pass over the tensor: a sample bounds that cost on big tensors.
    feature_sample: int = setting(0, "each feature's per-tensor RMS estimated on at most this many entries (0: all)")
    # The training loss falling many e-folds below its start is the sign of memorizing the training set
    # that the loss carries (lopt.fit_decay); theta["fit_decay"] holds the response's gain and knee.
    fit_decay: bool = setting(False, "weight decay grows as the training loss falls far below its start (needs loss=)")
    initial_fit_gain: float = setting(0.0, "fit_decay: the gain theta starts from (0: plain decay)")
    # Tuned optimizers take larger steps on these than on a dense layer (module docstring).
    conv_step: float = setting(1.0, "convolution kernels' steps times this, on top of their role's")
    embedding_step: float = setting(1.0, "embedding tables' steps times this, on top of their role's")
    schedule: str = setting("cosine", "the learning rate's decay to 0 after warmup: 'cosine' or 'linear'")
    learning_rate_scale: float = setting(1.0, "the learned peak learning rate times this")
    weight_decay: float | None = setting(None, "replaces the learned decoupled weight decay (None: theta's)")

    def __post_init__(self):
        check_parameterization(self)
        check_positive_integers(self, "hidden_size", "hidden_layers")
        if not isinstance(self.feature_sample, int) or isinstance(self.feature_sample, bool) or self.feature_sample < 0:
            raise SpecError(f"NormalizedMLPLOpt.feature_sample={self.feature_sample!r}: a count of entries, "
                            "or 0 for all of them")
        object.__setattr__(self, "momentum_decays", tuple(self.momentum_decays))  # JSON gives lists back
        if len(self.momentum_decays) != 3 or not all(0 <= d < 1 for d in self.momentum_decays):
            raise SpecError(f"NormalizedMLPLOpt.momentum_decays={self.momentum_decays!r}: three decays in [0, 1)")
        if not 0 <= self.second_moment_decay < 1:
            raise SpecError(f"NormalizedMLPLOpt.second_moment_decay={self.second_moment_decay!r}: must be in [0, 1)")
        if self.schedule not in harness.SCHEDULES:
            raise SpecError(f"NormalizedMLPLOpt.schedule={self.schedule!r}: one of {', '.join(harness.SCHEDULES)}")
        for field in ("orthogonalize", "width_scaling", "fit_decay"):
            if not isinstance(getattr(self, field), bool):
                raise SpecError(f"NormalizedMLPLOpt.{field}={getattr(self, field)!r}: must be True or False")
        if not (isinstance(self.initial_fit_gain, (int, float)) and math.isfinite(self.initial_fit_gain)):
            raise SpecError(f"NormalizedMLPLOpt.initial_fit_gain={self.initial_fit_gain!r}: must be a finite number")
        if self.orthogonalize and self.parameterization == "mup":
            raise SpecError("NormalizedMLPLOpt: orthogonalize=True sets the hidden steps' size by their shape "
                            "(Muon's rule), not by muP's 1/fan_in; use parameterization='sp', or orthogonalize=False")
        if self.width_scaling and self.parameterization == "mup":
            raise SpecError("NormalizedMLPLOpt: width_scaling=True sizes steps for standard-parameterized models "
                            "(the spectral condition); a muP model takes muP's own rule: set width_scaling=False")
        for field in ("consistent_rms", "initial_learning_rate", "initial_weight_decay", "conv_step",
                      "embedding_step", "learning_rate_scale", "weight_decay"):
            value = getattr(self, field)
            if value is None and field == "weight_decay":
                continue
            may_be_zero = field in ("initial_weight_decay", "weight_decay", "learning_rate_scale")
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 <= value < math.inf) or (
                    value == 0 and not may_be_zero):
                raise SpecError(f"NormalizedMLPLOpt.{field}={value!r}: must be "
                                f"{'non-negative' if may_be_zero else 'positive'} and finite")

    def init(self, key):
        inputs = NUM_FEATURES + 1  # the features and the fraction of the run done
        layers = adam_like(init_mlp(key, [inputs] + [self.hidden_size] * self.hidden_layers + [1]),
                           feature=ADAM_FEATURE)
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

    def peak_learning_rate(self, theta) -> jax.Array:
        """The peak of the learning-rate schedule: the one meta-training learned, times learning_rate_scale."""
        return jnp.exp(jnp.asarray(theta["log_learning_rate"])) * self.learning_rate_scale

    def decoupled_weight_decay(self, theta) -> jax.Array:
        """The decoupled weight decay: the one meta-training learned, or the weight_decay setting."""
        if self.weight_decay is not None:
            return jnp.asarray(self.weight_decay, jnp.float32)
        return jnp.exp(jnp.asarray(theta["log_weight_decay"]))

    # --- the learned direction of the matrices ---
    def _init_directions(self, params, num_steps) -> DirectionState:
        return DirectionState(jax.tree.map(lambda p: jnp.zeros((3,) + p.shape, jnp.float32), params),
                              jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params),
                              jnp.asarray(0, jnp.int32), jnp.asarray(num_steps, jnp.int32))

    def _step(self, theta, grads, state, params, kind: str):
        """The directions of tensors of one kind ("hidden", "input" or "output" matrices), each
        RMS-normalized to `consistent_rms` (or orthogonalized) and ascent-signed like scale_by_adam's
        output, and the next state."""
        one = self._tensor_rule(theta, state, kind)
        out = jax.tree.map(one, grads, params, state.momentum, state.second_moment)
        pick = lambda index: jax.tree.map(lambda _, o: o[index], grads, out)  # noqa: E731
        return pick(0), DirectionState(pick(1), pick(2), state.iteration + 1, state.num_steps)

    def _tensor_rule(self, theta, state: DirectionState, kind: str):
        """(grad, param, momentum, second_moment) -> (direction, momentum, second_moment) of one matrix of
        a kind, at the step `state` is at."""
        momentum_decays = acc.learned_decays(self.momentum_decays, theta["momentum_decays"])
        second_moment_decays = acc.learned_decays((self.second_moment_decay,), theta["second_moment_decays"])
        layers = theta["mlp"]
        fraction = jnp.asarray(state.iteration, jnp.float32) / jnp.maximum(state.num_steps, 1)
        first = layers["layer_0"]
        time_bias = fraction * first["w"][NUM_FEATURES] + first["b"]  # the same for every entry

        def one(grad, param, momentum, second_moment):
            # acc.update_momentum with the decays on the leading axis: each feature the MLP reads is then
            # a contiguous array, whose loop over the entries vectorizes (a trailing axis of 3 made every
            # read a strided one; moving the axis around acc's update makes XLA copy the state).
            decays = momentum_decays.reshape((3,) + (1,) * grad.ndim)
            momentum = decays * momentum + (1.0 - decays) * grad[None]
            second_moment = acc.update_second_moment(second_moment[..., None], grad, second_moment_decays)[..., 0]
            columns = features(grad, param, momentum, second_moment)
            blocks = [column[..., None] for column in columns]
            if 0 < self.feature_sample < grad.size:  # the same RMS of the same features, on a sample's entries
                scales = rms_scales([sampled(block, grad.shape, self.feature_sample) for block in blocks])
            else:  # each feature by its own RMS over the whole tensor
                scales = jax.lax.rsqrt(1e-5 + mean_squares(columns))
            outputs = mlp_output_units(layers, blocks, time_bias, scales)
            return self._sized(outputs[0], kind), momentum, second_moment

        return one

    def _sized(self, direction, kind: str):
        """The MLP's direction for one matrix of a kind, at the RMS (or spectral norm) its kind takes."""
        direction = written_once(direction)  # read by a reduction and then a rescaling, or by Newton-Schulz
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
        return optax.GradientTransformation(lambda params: self._init_directions(params, num_steps), update_fn)

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
        weight_decay = self.decoupled_weight_decay(theta)
        decay = (fit.fit_decayed_weights(weight_decay, *jnp.asarray(theta["fit_decay"])) if self.fit_decay
                 else optax.add_decayed_weights(weight_decay))
        chain = optax.chain(self.rule(theta, num_steps, roles), decay,
                            optax.scale_by_learning_rate(harness.warmup_decay(self.schedule, self.peak_learning_rate(theta),
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
    """The MLP's 8 raw features of each entry, each shaped like the tensor: gradient, parameter, the 3
    momenta (momentum: (3,) + shape), and momentum / sqrt(second moment) at the 3 decays."""
    inverse_rms = jax.lax.rsqrt(second_moment + SECOND_MOMENT_EPS)
    return [grad, param, *momentum, *(m * inverse_rms for m in momentum)]


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


def written_once(x):
    """x, computed once into memory and read from there by every later op.

    XLA:CPU fuses a cheap elementwise producer into each of its consumers, recomputing it in each: the
    per-parameter MLP (a few hundred multiply-adds per entry) would run again in every Newton-Schulz
    iteration's sum and transpose, a dozen times per matrix. jax.lax.optimization_barrier does not stop
    it (XLA:CPU expands barriers before fusing); a gather is never duplicated. Taking every row in order,
    it costs one copy of x and changes no value."""
    rows = x.reshape(-1, x.shape[-1])
    return jnp.take(rows, jnp.arange(rows.shape[0]), axis=0, mode="clip", indices_are_sorted=True,
                    unique_indices=True).reshape(x.shape)


def mean_squares(columns: list[jax.Array]) -> jax.Array:
    """Each column's mean square over all its entries (columns: arrays of one shape), in one pass.

    One variadic reduction reads every column together, where separate jnp.mean calls make XLA:CPU take
    a pass (and a copy) per column. It sums rows of at most MAX_ROW entries, then the row sums: a
    sequential sum over a longer row would lose the precision of jnp.mean's. Differentiable (JAX has
    no derivative of a variadic reduction: its own is given)."""
    return _mean_squares(tuple(columns))


@jax.custom_jvp
def _mean_squares(columns: tuple) -> jax.Array:
    last = columns[0].shape[-1]
    width = last if last <= MAX_ROW else max(d for d in range(1, MAX_ROW + 1) if last % d == 0)
    dtype = jnp.result_type(*columns)
    rows = tuple(jnp.square(column.reshape(-1, width).astype(dtype)) for column in columns)
    row_sums = jax.lax.reduce(rows, (jnp.zeros((), dtype),) * len(rows), lambda a, b: tuple(map(jnp.add, a, b)), (1,))
    return jnp.stack([jnp.sum(row_sum) for row_sum in row_sums]) / columns[0].size


@_mean_squares.defjvp
def _mean_squares_jvp(primals, tangents):
    (columns,), (column_tangents,) = primals, tangents
    tangent = jnp.stack([2.0 * jnp.sum(c * t) for c, t in zip(columns, column_tangents)]) / columns[0].size
    return _mean_squares(columns), tangent
