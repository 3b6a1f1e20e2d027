"""Checkpoints of google/learned_optimization read into our architectures, without that library, haiku,
gin or TensorFlow.

Such a checkpoint is a `params` file (flax msgpack of a record holding `params`, `gen_id` and `step`)
with the `config.gin` of its training run beside it; `run_train.lopt = @HyperV2()` and the `HyperV2.*`
bindings name the architecture and its arguments. The config is parsed as data (lopt.gin_config), every
argument is checked against what our reimplementation supports, and every haiku tensor against the shape
the arguments imply, before the tensors are renamed into our theta:

| learned_optimization | ours |
| --- | --- |
| `AdafacMLPLOpt` (small_fc_lopt) | `MLPLOpt(parameterization="sp")` |
| `MLPLOpt` | `MomentumMLPLOpt` |
| `HyperV2` (VeLO) | `VeLO` |
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from flax import serialization
from flax.traverse_util import flatten_dict

from checkpoints import CheckpointError
from checkpoints.store import SPEC_FILE
from lopt import gin_config
from lopt.base import LearnedOptimizer
from lopt.momentum_mlp_lopt import MomentumMLPLOpt
from lopt.mlp_lopt import MLPLOpt
from lopt.registry import SpecError
from lopt.types import MetaParams
from lopt.velo import FEATURE_BLOCKS, VeLO
from lopt.velo_features import NUM_LSTM_INPUTS

PARAMS_FILE = "params"
CONFIG_FILE = "config.gin"
ARCHITECTURE_BINDING = "run_train.lopt"


@dataclasses.dataclass(frozen=True)
class _Format:
    """How one learned_optimization class maps onto ours."""

    optimizer: type[LearnedOptimizer]
    description: str
    # learned_optimization argument -> (our setting, learned_optimization's default)
    arguments: dict[str, tuple[str, Any]]
    # Arguments supported only at this value: others change the update or the meta-parameters' names.
    fixed: dict[str, Any]
    # Arguments that do not change the update (summaries, how the same arithmetic is laid out).
    ignored: frozenset[str]
    theta: Callable[[Any, "_Tensors"], MetaParams]


def is_checkpoint(path: str | os.PathLike) -> bool:
    """A params file, or a directory holding one and none of our spec.json."""
    path = Path(path)
    return path.is_file() or (path.is_dir() and (path / PARAMS_FILE).is_file() and not (path / SPEC_FILE).is_file())


def read_checkpoint(path: str | os.PathLike) -> tuple[LearnedOptimizer, MetaParams, dict[str, Any]]:
    """(our optimizer, theta as NumPy arrays, provenance) of a learned_optimization checkpoint: its params
    file or the directory holding it, with config.gin beside it."""
    path = Path(path)
    params_path = path / PARAMS_FILE if path.is_dir() else path
    config_path = params_path.parent / CONFIG_FILE
    if not params_path.is_file():
        raise CheckpointError(f"no learned_optimization checkpoint at {path}: {params_path} is missing")
    if not config_path.is_file():
        raise CheckpointError(
            f"{params_path} has no {CONFIG_FILE} beside it. It names the architecture and its arguments: copy "
            f"the {CONFIG_FILE} saved with the training run, or write one, e.g. for the released VeLO weights:\n"
            f"    {ARCHITECTURE_BINDING} = @HyperV2()\n    HyperV2.lstm_hidden_size = 512\n"
            "    HyperV2.param_inits = 256\n    HyperV2.use_bugged_next_lstm_state = True")
    # Lenient: a training run's config binds much else; only the architecture's own arguments must parse.
    bindings = gin_config.parse(config_path.read_text(encoding="utf-8"), str(config_path), strict=False)
    reference = _architecture_reference(bindings, config_path)
    arguments = gin_config.arguments(bindings, reference)
    fmt = FORMATS[reference.name]
    optimizer = _optimizer(fmt, reference.name, arguments, config_path)

    record = _read_record(params_path)
    described = f"{reference.name}({', '.join(f'{k}={v!r}' for k, v in sorted(arguments.items()))})"
    # Haiku's names, joined by '/': 'rnn_params/rnn/linear/w'.
    tensors = _Tensors(flatten_dict(record["params"], sep="/"), params_path, described)
    theta = fmt.theta(optimizer, tensors)
    tensors.check_all_used()
    provenance = {"converted_from": "learned_optimization", "source": str(params_path.absolute()),
                  "learned_optimization_architecture": reference.name,
                  "gin_arguments": {name: _jsonable(value) for name, value in sorted(arguments.items())},
                  "gen_id": _jsonable(record.get("gen_id")), "step": _jsonable(record.get("step"))}
    return optimizer, theta, provenance


def _architecture_reference(bindings, config_path) -> gin_config.Reference:
    keys = [key for key in bindings if key == ARCHITECTURE_BINDING or key.endswith("/" + ARCHITECTURE_BINDING)]
    reference = bindings[keys[0]] if keys else None
    if not isinstance(reference, gin_config.Reference):
        raise SpecError(f"{config_path} does not name the learned optimizer: expected a binding such as "
                        f"`{ARCHITECTURE_BINDING} = @HyperV2()`, found {reference!r}")
    if reference.name not in FORMATS:
        supported = "; ".join(f"{name} ({fmt.description})" for name, fmt in sorted(FORMATS.items()))
        raise SpecError(f"{config_path}: learned_optimization architecture {reference.name!r} is not supported. "
                        f"Supported: {supported}")
    return reference


def _optimizer(fmt: _Format, name: str, arguments: dict[str, Any], config_path) -> LearnedOptimizer:
    for argument, value in sorted(arguments.items()):
        if argument in fmt.fixed and value != fmt.fixed[argument]:
            raise SpecError(f"{config_path}: {name}.{argument} = {value!r} is not supported (our {name} "
                            f"reimplementation has only {argument} = {fmt.fixed[argument]!r})")
        if argument not in fmt.arguments and argument not in fmt.fixed and argument not in fmt.ignored:
            raise SpecError(f"{config_path}: {name}.{argument} is not an argument of learned_optimization's "
                            f"{name} that we know; known: {', '.join(sorted([*fmt.arguments, *fmt.fixed, *fmt.ignored]))}")
    settings = {setting: arguments.get(argument, default) for argument, (setting, default) in fmt.arguments.items()}
    try:
        return fmt.optimizer(**settings, parameterization="sp")
    except (TypeError, ValueError) as error:
        raise SpecError(f"{config_path}: {name} with these arguments does not fit our {fmt.optimizer.__name__}: "
                        f"{error}") from None


def _read_record(params_path: Path) -> dict[str, Any]:
    try:
        record = serialization.msgpack_restore(params_path.read_bytes())
    except Exception as error:  # msgpack raises several types for a file that is not msgpack
        raise CheckpointError(f"{params_path} is not a learned_optimization checkpoint (flax msgpack): "
                              f"{type(error).__name__}: {str(error)[:200]}") from None
    if isinstance(record, dict) and "params" not in record and "0" in record:
        # Older checkpoints hold a tuple (theta, gen_id, step).
        record = {"params": record["0"], "gen_id": record.get("1"), "step": record.get("2")}
    if not isinstance(record, dict) or not isinstance(record.get("params"), dict):
        raise CheckpointError(f"{params_path} is msgpack but not a learned_optimization parameter checkpoint "
                              "(no 'params' record)")
    return record


def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


class _Tensors:
    """The params file's tensors by haiku name. `take` checks one against the shape the config implies."""

    def __init__(self, flat: dict[str, Any], params_path: Path, described: str):
        self.flat, self.unused = flat, set(flat)
        self.params_path, self.described = params_path, described

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.flat:
            raise SpecError(f"{self.params_path}: {self.described} needs the tensor {name!r} of shape "
                            f"{shape}, which is missing")
        array = self.flat[name]
        if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
            raise SpecError(f"{self.params_path}: tensor {name!r} is {type(array).__name__} "
                            f"{getattr(array, 'dtype', '')}, not a float array")
        if array.shape != tuple(shape):
            raise SpecError(f"{self.params_path}: tensor {name!r} has shape {array.shape}; {self.described} "
                            f"expects {tuple(shape)}")
        self.unused.discard(name)
        return np.asarray(array, np.float32)

    def dense(self, prefix: str, fan_in: int, fan_out: int) -> dict[str, np.ndarray]:
        return {"w": self.take(f"{prefix}/w", (fan_in, fan_out)), "b": self.take(f"{prefix}/b", (fan_out,))}

    def check_all_used(self):
        if self.unused:
            raise SpecError(f"{self.params_path}: {', '.join(repr(n) for n in sorted(self.unused))} "
                            f"{'is not a parameter' if len(self.unused) == 1 else 'are not parameters'} "
                            f"of {self.described}")


def _layer_sizes(first: int, hidden: int, layers: int, last: int) -> list[tuple[int, int]]:
    sizes = [first] + [hidden] * layers + [last]
    return list(zip(sizes[:-1], sizes[1:]))


def _small_fc_theta(optimizer: MLPLOpt, tensors: _Tensors) -> MetaParams:
    sizes = _layer_sizes(optimizer.num_inputs, optimizer.hidden_size, optimizer.hidden_layers, 2)
    return {"momentum_decays": tensors.take("momentum_decays", (3,)),
            "second_moment_decays": tensors.take("rms_decays", (1,)),
            "adafactor_decays": tensors.take("adafactor_decays", (3,)),
            "mlp": {f"layer_{i}": {"w": tensors.take(f"nn/~/w{i}", (fan_in, fan_out)),
                                   "b": tensors.take(f"nn/~/b{i}", (fan_out,))}
                    for i, (fan_in, fan_out) in enumerate(sizes)}}


def _momentum_mlp_theta(optimizer: MomentumMLPLOpt, tensors: _Tensors) -> MetaParams:
    sizes = _layer_sizes(optimizer.num_inputs, optimizer.hidden_size, optimizer.hidden_layers, 2)
    return {"mlp": {f"layer_{i}": tensors.dense(f"mlp/~/linear_{i}", fan_in, fan_out)
                    for i, (fan_in, fan_out) in enumerate(sizes)}}


def _velo_theta(optimizer: VeLO, tensors: _Tensors) -> MetaParams:
    hidden, bank, mlp_hidden = optimizer.lstm_hidden_size, optimizer.num_mlps, optimizer.mlp_hidden_size
    # HyperV2 computes this projection and then overwrites its result: checked, but not carried.
    tensors.dense("rnn_params/linear", NUM_LSTM_INPUTS, hidden)
    layers = {"layer_0": {"w": np.concatenate([tensors.take(f"ff_mod_stack/~/w0__{i}", (bank, size, mlp_hidden))
                                               for i, size in enumerate(FEATURE_BLOCKS)], axis=1),
                          "b": tensors.take("ff_mod_stack/~/b0", (bank, mlp_hidden))}}
    last = optimizer.mlp_hidden_layers
    for index in range(1, last + 1):
        # The reference's MLP has a third output that it never reads: only direction and magnitude are kept.
        fan_out = 3 if index == last else mlp_hidden
        keep = slice(0, 2 if index == last else fan_out)
        layers[f"layer_{index}"] = {
            "w": tensors.take(f"ff_mod_stack/~/w{index}", (bank, mlp_hidden, fan_out))[..., keep],
            "b": tensors.take(f"ff_mod_stack/~/b{index}", (bank, fan_out))[..., keep]}
    return {
        "lstm_initial": {"hidden": tensors.take("lstm_init_state/hidden", (1, hidden))[0],
                         "cell": tensors.take("lstm_init_state/cell", (1, hidden))[0]},
        "tensor_mix": {"pool": tensors.dense("rnn_params/linear_1", NUM_LSTM_INPUTS, hidden),
                       "input": tensors.dense("rnn_params/linear_2", NUM_LSTM_INPUTS, hidden)},
        "lstm": tensors.dense("rnn_params/rnn/linear", 2 * hidden, 4 * hidden),
        "controls": tensors.dense("rnn_params/rnn_to_controls", hidden, bank),
        "step_size": tensors.dense("rnn_params/step_size", hidden, 1),
        "bank": layers,
    }


_DECAYS = {"initial_momentum_decays": ("momentum_decays", (0.9, 0.99, 0.999)),
           "initial_rms_decays": ("second_moment_decays", (0.999,)),
           "initial_adafactor_decays": ("adafactor_decays", (0.9, 0.99, 0.999))}
_STEP = {"exp_mult": ("exp_mult", 0.001), "step_mult": ("step_mult", 0.001)}

FORMATS: dict[str, _Format] = {
    "AdafacMLPLOpt": _Format(
        optimizer=MLPLOpt, description="small_fc_lopt, as our MLPLOpt",
        arguments={"hidden_size": ("hidden_size", 4), "hidden_layers": ("hidden_layers", 2), **_STEP, **_DECAYS},
        fixed={"make_separate_weights": False}, ignored=frozenset({"concat_weights", "split_weights"}),
        theta=_small_fc_theta),
    "MLPLOpt": _Format(
        optimizer=MomentumMLPLOpt, description="per-parameter MLP on momenta, as our MomentumMLPLOpt",
        arguments={"hidden_size": ("hidden_size", 32), "hidden_layers": ("hidden_layers", 2), **_STEP},
        fixed={}, ignored=frozenset({"compute_summary"}), theta=_momentum_mlp_theta),
    "HyperV2": _Format(
        optimizer=VeLO, description="VeLO, as our VeLO",
        arguments={"lstm_hidden_size": ("lstm_hidden_size", 128), "param_inits": ("num_mlps", 64),
                   "ff_hidden_size": ("mlp_hidden_size", 4), "ff_hidden_layers": ("mlp_hidden_layers", 2),
                   "use_bugged_next_lstm_state": ("use_bugged_next_lstm_state", False),
                   "use_bugged_loss_features": ("use_bugged_loss_features", True), **_STEP, **_DECAYS},
        fixed={"mix_layers": True, "with_validation_feature_dim": False, "adafactor_accumulator": True,
               "param_scale_mult": True, "precondition_output": False, "rnn_state_decay": 0.0,
               "constant_loss": False, "clip_param_scale_amount": None,
               **{f"with_{feature}": True for feature in (
                   "g", "m", "m_feat", "rms", "rms_feat", "rms_norm_g", "rsqrt_rms", "p", "fac_norm_g", "fac_rms",
                   "fac_rsqrt", "grad_clip_feat", "fac_mom_mult", "rms_only_norm_g")}},
        # reparam_decay is unused by HyperV2; validation_mode is read only with_validation_feature_dim.
        ignored=frozenset({"summarize_each_layer", "summarize_all_control", "reparam_decay", "validation_mode"}),
        theta=_velo_theta),
}
