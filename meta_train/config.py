"""Meta-training configs: one typed dataclass, every field explained where it is declared, and named
presets that change a few fields of the default. The learned optimizer is a field of its own, the
architecture's dataclass (lopt), so its settings are declared and checked once, there.
`python -m meta_train --config NAME --set FIELD=VALUE optimizer.FIELD=VALUE` picks and edits one."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from checkpoints.imports import ImportPathError, looks_like_import_path, resolve_import_path
import lopt
from lopt.declare import check_types, describe, field_types, help_of, parse, setting
import tasks

ESTIMATOR_NAMES = ("pes", "es_single", "truncated_es", "full_es", "tbptt")
CURRICULA = ("uniform", "regret")  # meta_train.curriculum's modes


class ConfigError(ValueError):
    """An unknown preset or field, or a value of the wrong type or range."""


# The shipped default's architecture as meta-training starts it: the normalized rule, its hidden matrices
# orthogonalized, steps sized by the spectral condition, for standard-parameterized models.
ORTHOGONAL_MLP = lopt.NormalizedMLPLOpt(hidden_size=8, parameterization="sp", orthogonalize=True, width_scaling=True,
                                        initial_learning_rate=0.01)
# Its harness as shipped: the decay that reads the training loss, conv kernels' and embedding tables' steps x5.
ORTHOGONAL_MLP_SHIPPED = dataclasses.replace(ORTHOGONAL_MLP, fit_decay=True, initial_fit_gain=2.0, conv_step=5.0,
                                             embedding_step=5.0)
# The theta entries the main job meta-trains: the step sizes, decays and momentum timescales, not the MLP.
MAIN_JOB_ENTRIES = "log_learning_rate,log_weight_decay,log_group_scales,fit_decay,momentum_decays,second_moment_decays"


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """The defaults are the README's main job: minutes on a 2-core CPU."""

    # --- the learned optimizer ---
    optimizer: lopt.LearnedOptimizer = setting(
        ORTHOGONAL_MLP_SHIPPED, "the architecture meta-trained, with its settings (optimizer.FIELD=VALUE; "
        "optimizer=NAME for another architecture's defaults)")
    init_from: str = setting("", "a shipped optimizer's name or a saved optimizer's directory to start theta from "
                                 "(the same architecture; harness settings may differ); '': the architecture's own start")
    # Fewer perturbed dimensions make a less noisy ES estimate.
    meta_train_only: str = setting(MAIN_JOB_ENTRIES, "comma-separated top-level theta entries meta-trained, the rest "
                                                     "held where they start; '': all of theta")
    # --- what it is meta-trained on ---
    task_family: str = setting("mixed_sp", "a name from tasks.FAMILIES, or your own as module.path:attribute "
                                           "(a tasks.TaskFamily, e.g. tasks.family([...]))")
    num_task_configs: int = setting(6, "configs drawn from a sampled family (a bucketed family trains all its buckets)")
    workers_per_config: int = setting(4, "inner training runs per config, each an antithetic pair for the ES estimators")
    # --- the meta-gradient ---
    estimator: str = setting("pes", "'pes', 'es_single', 'truncated_es', 'full_es' or 'tbptt'")
    truncation_length: int = setting(20, "inner steps per worker per outer step")
    sigma: float = setting(0.01, "std of the ES / PES perturbations of theta")
    min_inner_length: int = setting(100, "inner runs last log-uniform [min, max] steps, then restart on a fresh task")
    max_inner_length: int = setting(1000, "the longest inner run (also the run length of full_es)")
    meta_loss_split: str = setting("mix", "meta-loss on each step's 'train' batch, a 'valid' batch (the model in "
                                          "inference mode), or a 'mix' of both")
    meta_loss_valid_weight: float = setting(0.5, "'mix': the validation loss's share of the meta-loss")
    meta_loss_time_power: float = setting(1.0, "k: each step's meta-loss times (k + 1) (step / run length)^k; 0: even")
    max_meta_loss: float = setting(3.0, "normalized losses above this count as diverged and are capped")
    # --- task augmentation, drawn afresh for every inner run (tasks.augment) ---
    reparam: str = setting("none", "parameters stored as w / s: 'none', or one s 'global', per 'tensor', per 'parameter'")
    reparam_max: float = setting(100.0, "s log-uniform in [1 / reparam_max, reparam_max]")
    loss_scale_max: float = setting(1.0, "the loss times c log-uniform in [1 / loss_scale_max, loss_scale_max]; 1: off")
    # --- which configs, how often (meta_train.curriculum) ---
    curriculum: str = setting("uniform", "'uniform', or 'regret': favour the configs where tuned Adam is furthest ahead")
    curriculum_floor: float = setting(0.2, "'regret': the share of the sampling kept uniform")
    curriculum_decay: float = setting(0.9, "'regret': per outer step, of each config's running regret estimate")
    # --- the outer (meta) optimizer: AdamW, linear warmup then cosine decay, global-norm clipping ---
    outer_steps: int = setting(500, "meta-gradient steps")
    outer_learning_rate: float = setting(3e-3, "peak learning rate of theta, reached after warmup")
    outer_final_learning_rate: float = setting(1e-3, "learning rate of theta at the last outer step")
    outer_warmup_steps: int = setting(100, "outer steps of linear warmup from 0")
    outer_weight_decay: float = setting(1e-4, "AdamW decoupled weight decay of theta")
    outer_clip_norm: float = setting(1.0, "global-norm clipping of the meta-gradient")
    # --- bookkeeping ---
    seed: int = setting(1, "everything random follows from it: the same config gives the same theta")
    log_every: int = setting(50, "outer steps between TensorBoard points and progress lines")
    checkpoint_every: int = setting(100, "outer steps between orbax checkpoints")
    keep_checkpoints: int = setting(3, "checkpoints kept on disk (the newest)")
    eval_task: str = setting("mlp_mnist_14x14", "held-out task on which the result is compared with tuned baselines: "
                                                "a name from tasks.TASKS, or module.path:attribute (a tasks.Task)")
    eval_steps: int = setting(1000, "its training length")

    def __post_init__(self):
        def refuse(field: str, why: str):
            raise ConfigError(f"MetaTrainConfig.{field}={getattr(self, field)!r}: {why}")

        if not isinstance(self.optimizer, lopt.LearnedOptimizer):
            refuse("optimizer", "must be a learned optimizer of lopt.ARCHITECTURES (e.g. lopt.NormalizedMLPLOpt())")
        wrong = check_types(self)
        if wrong:
            raise ConfigError(f"MetaTrainConfig.{wrong}")
        # The user's own objects are only named here: importing their module may touch JAX's devices,
        # which a process of a group must not do before it joins (resolve_own_objects does it after).
        for field, registry in (("task_family", tasks.FAMILIES), ("eval_task", tasks.TASKS)):
            name = getattr(self, field)
            if name not in registry and not is_object_label(name) and not looks_like_import_path(name):
                refuse(field, f"must be one of {', '.join(sorted(registry))}, or an import path module.path:attribute")
        for field, choices in (("estimator", ESTIMATOR_NAMES), ("meta_loss_split", ("train", "valid", "mix")),
                               ("curriculum", CURRICULA), ("reparam", tasks.REPARAM_LEVELS)):
            if getattr(self, field) not in choices:
                refuse(field, f"must be one of {', '.join(choices)}")
        if not 0 <= self.meta_loss_valid_weight <= 1:
            refuse("meta_loss_valid_weight", "must lie in [0, 1]")
        if not 0 <= self.meta_loss_time_power <= 10:
            refuse("meta_loss_time_power", "must lie in [0, 10]")
        if not 0 < self.curriculum_floor <= 1:
            refuse("curriculum_floor", "must lie in (0, 1]")
        if not 0 <= self.curriculum_decay < 1:
            refuse("curriculum_decay", "must lie in [0, 1)")
        for field in ("reparam_max", "loss_scale_max"):
            if not 1 <= getattr(self, field) < float("inf"):
                refuse(field, "must be at least 1 and finite")
        for field in ("num_task_configs", "workers_per_config", "truncation_length", "min_inner_length",
                      "max_inner_length", "outer_steps", "log_every", "checkpoint_every", "keep_checkpoints", "eval_steps"):
            if getattr(self, field) < 1:
                refuse(field, "must be at least 1")
        if self.min_inner_length > self.max_inner_length:
            refuse("min_inner_length", f"must not exceed max_inner_length={self.max_inner_length}")
        for field in ("sigma", "outer_learning_rate", "max_meta_loss", "outer_clip_norm"):
            if not 0 < getattr(self, field) < float("inf"):
                refuse(field, "must be positive and finite")
        for field in ("outer_final_learning_rate", "outer_weight_decay", "outer_warmup_steps"):
            if not 0 <= getattr(self, field) < float("inf"):
                refuse(field, "must be non-negative and finite")

    def augmentation(self) -> tasks.Augmentation:
        return tasks.Augmentation(self.reparam, self.reparam_max, self.loss_scale_max)

    def to_record(self) -> dict[str, Any]:
        """The config as JSON-ready values, the optimizer as its spec (what config.json records)."""
        record = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return json.loads(json.dumps({**record, "optimizer": self.optimizer.spec()}))

    def to_json(self) -> str:
        return json.dumps(self.to_record(), indent=2, sort_keys=True)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "MetaTrainConfig":
        """A config as `to_record` wrote it, or as an earlier version recorded it (every optimizer setting
        beside the meta-training's, older names): a run recorded then is the same config now."""
        record = dict(record)
        if not isinstance(record.get("optimizer"), dict):
            record = _from_flat_record(record)
        try:
            optimizer = lopt.from_spec(record.pop("optimizer"))
        except ValueError as error:
            raise ConfigError(f"MetaTrainConfig.optimizer: {error}") from None
        for name, off in _REMOVED_OPTIONS.items():
            value = record.pop(name, off)
            if value != off:
                raise ConfigError(f"the record has {name}={value!r}, an option since removed (it did not pay: "
                                  f"benchmarks/results/meta_train_ideas.md); only runs without it can be read")
        for name in _REMOVED_SETTINGS:
            record.pop(name, None)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)} in the record")
        return cls(optimizer=optimizer, **record)


# Options an earlier version had, at their off values (a record with them off is the same config now),
# and the settings that only mattered with them on: ELO's expert supervision and failure buffer.
_REMOVED_OPTIONS = {"expert": "none", "failure_buffer": 0}
_REMOVED_SETTINGS = ("imitation_weight", "imitation_decay_from", "imitation_decay_to", "failure_share")


def object_label(name: str) -> str:
    """What task_family or eval_task records for an object given to `meta_train` itself: its name in
    angle brackets, which no import path or registry name can be."""
    return f"<{name}>"


def is_object_label(text: str) -> bool:
    return text.startswith("<") and text.endswith(">")


def resolve_own_objects(config: MetaTrainConfig) -> None:
    """Resolves the config's import paths (task_family, eval_task), raising ConfigError in one line for
    one that names no module or attribute, or the wrong kind of object."""
    for field, resolve in (("task_family", resolve_family), ("eval_task", resolve_eval_task)):
        try:
            resolve(getattr(config, field))
        except ImportPathError as error:
            raise ConfigError(f"MetaTrainConfig.{field}={getattr(config, field)!r}: {error}") from None


def resolve_family(name: str) -> tasks.TaskFamily:
    """A family by its registered name or by the import path of the user's own (resolved again by every
    process, and on --resume, from the config's record)."""
    if name in tasks.FAMILIES:
        return tasks.FAMILIES[name]
    if is_object_label(name):
        raise ConfigError(f"MetaTrainConfig.task_family={name!r} was given as an object: pass it again as "
                          "meta_train(..., family=...), or name it by import path module.path:attribute")
    return resolve_import_path(name, "a tasks.TaskFamily", lambda found: isinstance(found, tasks.TaskFamily))


def resolve_eval_task(name: str) -> tasks.Task | None:
    """The user's own held-out task named by import path; None for a registered name (built in the
    meta-training family's parameterization)."""
    if name in tasks.TASKS:
        return None
    if is_object_label(name):
        raise ConfigError(f"MetaTrainConfig.eval_task={name!r} was given as an object: pass it again as "
                          "meta_train(..., eval_task=...), or name it by import path module.path:attribute")
    return resolve_import_path(name, "a tasks.Task", lambda found: isinstance(found, tasks.Task))


# Earlier versions' names of today's fields.
_RENAMED = {"learning_rate": "outer_learning_rate", "final_learning_rate": "outer_final_learning_rate",
            "warmup_steps": "outer_warmup_steps", "weight_decay": "outer_weight_decay", "clip_norm": "outer_clip_norm",
            "num_tasks": "workers_per_config"}
# Fields an earlier version had for options since removed; recorded at these values they changed nothing.
_REMOVED_AT = {"role_scales": False, "snr_inputs": False, "tensor_magnitude": False, "feature_normalization": "feature",
               "lstm_hidden_size": None}
# An earlier version's field defaults, where a record written before a field existed leaves it out.
_FLAT_DEFAULTS = {"architecture": "mlp_lopt", "hidden_size": 4, "parameterization": "mup", "init_from": "",
                  "meta_train_only": "", "meta_loss_split": "train", "meta_loss_time_power": 0.0, "seed": 0,
                  "log_every": 25, "checkpoint_every": 250, "outer_steps": 1500, "initial_learning_rate": 0.005,
                  "task_family": "mlp_images"}


def _from_flat_record(flat: dict[str, Any]) -> dict[str, Any]:
    flat = {_RENAMED.get(name, name): value for name, value in {**_FLAT_DEFAULTS, **flat}.items()}
    architecture = lopt.ARCHITECTURES.get(flat.pop("architecture"))
    if architecture is None:
        raise ConfigError(f"the record's architecture is not one of {', '.join(sorted(lopt.ARCHITECTURES))}")
    settings = {"parameterization": flat.pop("parameterization")}
    names = {field.name for field in dataclasses.fields(architecture)}
    hidden_size = flat.pop("hidden_size")
    if architecture is lopt.LSTMLOpt:
        settings.update(mlp_hidden_size=hidden_size, lstm_hidden_size=flat.get("lstm_hidden_size", 32))
    elif "hidden_size" in names:
        settings["hidden_size"] = hidden_size
    if architecture is lopt.MLPLOpt and flat.get("horizon_schedule"):
        settings["time_feature_horizon"] = flat["max_inner_length"]
    record = {}
    for name, value in flat.items():
        if name in _REMOVED_AT:
            if _REMOVED_AT[name] is not None and value != _REMOVED_AT[name]:
                raise ConfigError(f"the record sets {name}={value!r}, an option since removed")
        elif name in names:
            settings[name] = value
        elif name not in _OTHER_ARCHITECTURES_FIELDS or name in _RENAMED.values():
            record[name] = value
    return {**record, "optimizer": {"architecture": architecture.architecture, "settings": settings}}


# Every architecture's settings: in a flat record, those of another architecture than its own were ignored.
_OTHER_ARCHITECTURES_FIELDS = {field.name for cls in lopt.ARCHITECTURES.values() for field in dataclasses.fields(cls)}


# Fields that change what is logged, kept or shown, never theta: a resumed run may change them.
BOOKKEEPING_FIELDS = ("log_every", "checkpoint_every", "keep_checkpoints", "eval_task", "eval_steps")

DEFAULT = MetaTrainConfig()
PRESETS: dict[str, MetaTrainConfig] = {
    # The README's main job (the field defaults): the shipped default's rule on the mixed family from its
    # designed start, its step sizes, decays and momenta meta-trained (MAIN_JOB_ENTRIES), not its MLP: in
    # this few steps the ES estimate of all of theta is too noisy to improve on that start.
    "default": DEFAULT,
    # The recipe of the shipped default's theta: all of theta, four times the steps; shipped with
    # ORTHOGONAL_MLP_SHIPPED's harness (`lopt.load(..., fit_decay=..., conv_step=...)` changes it).
    "orthogonal_mlp": dataclasses.replace(DEFAULT, optimizer=ORTHOGONAL_MLP, meta_train_only="", outer_steps=2000),
    # The recipe of the shipped muP optimizer: small_fc_lopt's MLP started as per-tensor normalized Adam
    # with a cosine schedule over the run, on muP image MLPs of widths 32-128.
    "mulo": dataclasses.replace(
        DEFAULT, optimizer=lopt.MLPLOpt(hidden_size=4, parameterization="mup", step_mult=0.03, horizon_schedule=True,
                                        init_rule="adam", time_feature_horizon=1000),
        meta_train_only="", task_family="mlp_images", num_task_configs=4, meta_loss_split="train",
        meta_loss_time_power=0.0, outer_steps=1000, seed=0, checkpoint_every=250),
    # Seconds: a 10-d quadratic family, for trying the machinery and for tests. The normalized rule from
    # its untrained start (per-tensor normalized Adam under a warmup-cosine schedule).
    "quadratic": dataclasses.replace(
        DEFAULT, optimizer=lopt.NormalizedMLPLOpt(hidden_size=8, parameterization="sp", initial_learning_rate=0.1),
        meta_train_only="", task_family="quadratics", num_task_configs=1, workers_per_config=8, truncation_length=10,
        min_inner_length=50, max_inner_length=200, meta_loss_split="train", meta_loss_time_power=0.0,
        outer_steps=1000, outer_warmup_steps=10, seed=0, checkpoint_every=250, eval_task="quadratic_10d",
        eval_steps=200, max_meta_loss=10.0),
}

PRESET_DESCRIPTIONS = {
    "default": "minutes on a 2-core CPU: the default's rule on the mixed family, its step sizes, decays and momenta",
    "orthogonal_mlp": "the recipe of the shipped default's theta: all of it, 2,000 outer steps (CPU)",
    "mulo": "the recipe of the shipped muP optimizer: small_fc_lopt's MLP on muP image MLPs (CPU)",
    "quadratic": "seconds: 10-d quadratics, the normalized rule; for trying the machinery",
}


def preset(name: str) -> MetaTrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def describe_fields(config: MetaTrainConfig | None = None) -> str:
    """Every field with its type, its value in `config` (a preset, with --set applied; the defaults if
    None) and its help, read from the declarations; the optimizer's settings as optimizer.FIELD."""
    config = config or DEFAULT
    lines = [line for line in describe(dataclasses.replace(config, optimizer=DEFAULT.optimizer))
             if not line.startswith("optimizer:")]
    header = (f"optimizer = {config.optimizer.architecture}  # {help_of(dataclasses.fields(MetaTrainConfig)[0])}; "
              f"one of {', '.join(sorted(lopt.ARCHITECTURES))}")
    return "\n".join([header] + describe(config.optimizer, "optimizer.") + lines)


def with_overrides(config: MetaTrainConfig, assignments: list[str]) -> MetaTrainConfig:
    """The config with `FIELD=VALUE` and `optimizer.FIELD=VALUE` assignments applied, each value parsed as
    its field's declared type; `optimizer=NAME` puts that architecture, at its defaults, in its place."""
    fields = {field.name for field in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    optimizer = config.optimizer
    optimizer_changes: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep:
            raise ConfigError(f"--set expects FIELD=VALUE, got {assignment!r}")
        if name == "optimizer":
            if text not in lopt.ARCHITECTURES:
                raise ConfigError(f"optimizer={text!r}: one of {', '.join(sorted(lopt.ARCHITECTURES))}")
            optimizer, optimizer_changes = lopt.ARCHITECTURES[text](), {}
            continue
        owner, is_setting, setting_name = name.partition(".")
        if is_setting and owner == "optimizer":
            kinds = field_types(type(optimizer))
            if setting_name not in kinds:
                raise ConfigError(f"{optimizer.architecture} has no setting {setting_name!r}; its settings: "
                                  f"{', '.join(kinds)}")
            optimizer_changes[setting_name] = _parsed(name, kinds[setting_name], text)
            continue
        if name not in fields:
            raise ConfigError(f"unknown config field {name!r}; fields: {', '.join(sorted(fields))} "
                              "(the optimizer's as optimizer.FIELD)")
        changes[name] = _parsed(name, field_types(MetaTrainConfig)[name], text)
    try:
        optimizer = dataclasses.replace(optimizer, **optimizer_changes)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return dataclasses.replace(config, optimizer=optimizer, **changes)


def _parsed(name: str, kind: Any, text: str) -> Any:
    try:
        return parse(kind, text)
    except ValueError as error:
        raise ConfigError(f"{name} takes {error}, got {text!r}") from None
