"""Meta-training configs: one typed dataclass, every field explained, and named presets that change a
few fields of the default. `python -m meta_train --config NAME --set field=value` picks and edits one."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import typing
from typing import Any

import lopt
from lopt.mlp_lopt import INIT_RULES
import tasks

ESTIMATOR_NAMES = ("pes", "truncated_es", "full_es", "tbptt")
CURRICULA = ("uniform", "regret")  # meta_train.curriculum's modes


def _parse_bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(text)


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
_PARSERS = {**_TYPES, "bool": _parse_bool}


class ConfigError(ValueError):
    """An unknown preset or field, or a value of the wrong type or range."""


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    # --- the learned optimizer ---
    architecture: str = "mlp_lopt"  # "mlp_lopt", "lstm_lopt", or "adam" (meta-tune Adam's hyperparameters)
    hidden_size: int = 4  # hidden units of the per-parameter MLP (4 in small_fc_lopt, 32 in muLO)
    lstm_hidden_size: int = 32  # units of the per-tensor LSTM (lstm_lopt only)
    parameterization: str = "mup"  # "mup" (hidden updates / fan_in) or "sp"
    # (the next four shape mlp_lopt only: other architectures ignore them, and --set refuses them there)
    step_mult: float = 0.001  # mlp_lopt: the step is direction * exp(magnitude * 0.001) * step_mult
    horizon_schedule: bool = False  # mlp_lopt: steps times a learned schedule over the run (and time features kept in range)
    init_rule: str = "random"  # mlp_lopt: theta starts "random" or as per-tensor normalized "adam" (cosine schedule)
    role_scales: bool = False  # mlp_lopt, muP: a learned step multiplier for each muP role (input, hidden, output)
    orthogonalize: bool = True  # normalized_mlp: hidden matrices' directions orthogonalized (Newton-Schulz, as Muon)
    initial_learning_rate: float = 0.005  # normalized_mlp: the warmup-cosine peak theta starts from (then learned)
    width_scaling: bool = False  # normalized_mlp: step sizes follow the spectral condition as widths change (sp only)
    tensor_magnitude: bool = False  # normalized_mlp: a learned per-tensor step multiplier (mean of a second MLP output)
    feature_normalization: str = "feature"  # normalized_mlp: inputs scaled per "feature" (8 reductions) or "shared" (2)
    feature_sample: int = 0  # normalized_mlp, "feature": each feature's RMS estimated on this many entries a tensor (0: all)
    snr_inputs: bool = False  # normalized_mlp, "feature": each tensor's log gradient signal-to-noise ratio as MLP inputs
    fit_decay: bool = False  # normalized_mlp: weight decay grows as the training loss falls far below its start (lopt.fit_decay)
    initial_fit_gain: float = 0.0  # normalized_mlp, fit_decay: the decay's gain theta starts from (then learned)
    conv_step: float = 1.0  # normalized_mlp: convolution kernels' steps times this, on top of their role's
    embedding_step: float = 1.0  # normalized_mlp: embedding tables' steps times this, on top of their role's
    schedule: str = "cosine"  # normalized_mlp: the learning rate's decay to 0 after warmup, "cosine" or "linear"
    # --- where theta starts, and which of it is meta-trained ---
    init_from: str = ""  # a shipped optimizer's name or a saved optimizer's directory: theta starts as its
    # theta (the same architecture and settings, but for conv_step, embedding_step and schedule, settings outside
    # theta; entries this config's optimizer adds, such as fit_decay's, at their initial values); "": the
    # architecture's own start
    meta_train_only: str = ""  # comma-separated theta entries (top-level names) meta-trained; the rest stay as
    # they start (fewer perturbed dimensions: a less noisy ES estimate); "": all of theta
    # --- what it is meta-trained on ---
    task_family: str = "mlp_images"  # a name from tasks.FAMILIES
    num_task_configs: int = 2  # configs drawn from the family at the start, each trained by its own workers (a mixed family: its buckets)
    num_tasks: int = 4  # workers per config, each an antithetic pair for the ES estimators
    # --- the meta-gradient ---
    estimator: str = "pes"  # "pes", "truncated_es", "full_es" or "tbptt"
    truncation_length: int = 20  # inner steps per worker per meta-step
    sigma: float = 0.01  # std of the ES / PES perturbations of theta
    min_inner_length: int = 100  # inner runs last log-uniform [min, max] steps, then restart
    max_inner_length: int = 1000  # the longest inner run (also the run length of full_es)
    meta_loss_split: str = "train"  # meta-loss on each step's "train" batch, a "valid" batch, or a "mix" of both
    meta_loss_valid_weight: float = 0.5  # "mix": the validation loss's share of the meta-loss
    meta_loss_time_power: float = 0.0  # k: each step's meta-loss times (k + 1) (step / run length)^k; 0: even
    # --- task augmentation, drawn afresh for every inner run (tasks.augment) ---
    reparam: str = "none"  # parameters stored as w / s: "none", or one s "global", per "tensor", per "parameter"
    reparam_max: float = 100.0  # s log-uniform in [1 / reparam_max, reparam_max] (learned_optimization's range)
    loss_scale_max: float = 1.0  # the loss times c log-uniform in [1 / loss_scale_max, loss_scale_max]; 1: off
    max_meta_loss: float = 3.0  # normalized losses above this count as diverged and are capped
    # --- which configs, how often (meta_train.curriculum) ---
    curriculum: str = "uniform"  # "uniform", or "regret": favour the configs where tuned Adam is furthest ahead
    curriculum_floor: float = 0.2  # "regret": the share of the sampling kept uniform (no config below it)
    curriculum_decay: float = 0.9  # "regret": per outer step, of each config's running regret estimate
    # --- the outer (meta) optimizer: AdamW, linear warmup then cosine decay, global-norm clipping ---
    outer_steps: int = 1500  # meta-gradient steps
    learning_rate: float = 3e-3  # peak outer learning rate, reached after warmup
    final_learning_rate: float = 1e-3  # outer learning rate at the last step
    warmup_steps: int = 100  # outer steps of linear warmup from 0 to learning_rate
    weight_decay: float = 1e-4  # AdamW decoupled weight decay of theta
    clip_norm: float = 1.0  # global-norm clipping of the meta-gradient
    # --- bookkeeping ---
    seed: int = 0  # everything random follows from it: the same config gives the same theta
    log_every: int = 25  # outer steps between TensorBoard points and progress lines
    checkpoint_every: int = 250  # outer steps between orbax checkpoints
    keep_checkpoints: int = 3  # checkpoints kept on disk (the newest)
    eval_task: str = "mlp_mnist_14x14"  # held-out task on which the result is compared with Adam
    eval_steps: int = 1000  # its training length

    def __post_init__(self):
        def refuse(field: str, why: str):
            raise ConfigError(f"MetaTrainConfig.{field}={getattr(self, field)!r}: {why}")

        hints = typing.get_type_hints(MetaTrainConfig)
        for field in dataclasses.fields(self):
            kind, value = _TYPES[hints[field.name].__name__], getattr(self, field.name)
            accepted = (int, float) if kind is float else (kind,)
            if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
                refuse(field.name, f"must be {'an' if kind is int else 'a'} {kind.__name__}")

        if self.architecture not in lopt.ARCHITECTURES:
            refuse("architecture", f"must be one of {', '.join(sorted(lopt.ARCHITECTURES))}")
        if self.parameterization not in ("mup", "sp"):
            refuse("parameterization", "must be mup or sp")
        if self.init_rule not in INIT_RULES:
            refuse("init_rule", f"must be one of {', '.join(INIT_RULES)}")
        if self.role_scales and self.parameterization != "mup" and self.architecture == "mlp_lopt":
            refuse("role_scales", "needs parameterization=mup (the roles come with muP)")
        if self.task_family not in tasks.FAMILIES:
            refuse("task_family", f"must be one of {', '.join(sorted(tasks.FAMILIES))}")
        family = tasks.FAMILIES[self.task_family]
        if isinstance(family, tasks.MixedFamily) and self.num_task_configs != len(family.buckets):
            refuse("num_task_configs", f"the mixed family {self.task_family} has {len(family.buckets)} shape "
                                       f"buckets, and a run trains all of them (set num_task_configs="
                                       f"{len(family.buckets)})")
        if self.eval_task not in tasks.TASKS:
            refuse("eval_task", f"must be one of {', '.join(sorted(tasks.TASKS))}")
        if self.estimator not in ESTIMATOR_NAMES:
            refuse("estimator", f"must be one of {', '.join(ESTIMATOR_NAMES)}")
        if self.meta_loss_split not in ("train", "valid", "mix"):
            refuse("meta_loss_split", "must be train, valid or mix")
        if not 0 <= self.meta_loss_valid_weight <= 1:
            refuse("meta_loss_valid_weight", "must lie in [0, 1]")
        if not 0 <= self.meta_loss_time_power <= 10:
            refuse("meta_loss_time_power", "must lie in [0, 10]")
        if self.curriculum not in CURRICULA:
            refuse("curriculum", f"must be one of {', '.join(CURRICULA)}")
        if not 0 < self.curriculum_floor <= 1:
            refuse("curriculum_floor", "must lie in (0, 1]")
        if not 0 <= self.curriculum_decay < 1:
            refuse("curriculum_decay", "must lie in [0, 1)")
        if self.reparam not in tasks.REPARAM_LEVELS:
            refuse("reparam", f"must be one of {', '.join(tasks.REPARAM_LEVELS)}")
        if self.feature_normalization not in lopt.normalized_mlp.FEATURE_NORMALIZATIONS:
            refuse("feature_normalization", f"must be one of {', '.join(lopt.normalized_mlp.FEATURE_NORMALIZATIONS)}")
        if self.schedule not in lopt.harness.SCHEDULES:
            refuse("schedule", f"must be one of {', '.join(lopt.harness.SCHEDULES)}")
        for field in ("reparam_max", "loss_scale_max"):
            if not 1 <= getattr(self, field) < float("inf"):
                refuse(field, "must be at least 1 and finite")
        for field in ("hidden_size", "lstm_hidden_size", "num_task_configs", "num_tasks", "truncation_length",
                      "min_inner_length", "max_inner_length", "outer_steps", "log_every", "checkpoint_every",
                      "keep_checkpoints", "eval_steps"):
            if getattr(self, field) < 1:
                refuse(field, "must be at least 1")
        if self.feature_sample < 0:
            refuse("feature_sample", "must be 0 (every entry) or a positive count")
        if self.snr_inputs and self.feature_normalization != "feature":
            refuse("snr_inputs", "reads the ratios' per-tensor RMS, which only feature_normalization=feature computes")
        if self.min_inner_length > self.max_inner_length:
            refuse("min_inner_length", f"must not exceed max_inner_length={self.max_inner_length}")
        if self.architecture == "normalized_mlp" and self.orthogonalize and self.parameterization == "mup":
            refuse("orthogonalize", "normalized_mlp orthogonalizes only in parameterization=sp (Muon's shape rule "
                                    "sizes its hidden steps, not muP's 1/fan_in); set orthogonalize=false for mup")
        if self.architecture == "normalized_mlp" and self.width_scaling and self.parameterization == "mup":
            refuse("width_scaling", "is for standard-parameterized models (parameterization=sp); muP has its own rule")
        for field in ("sigma", "learning_rate", "max_meta_loss", "clip_norm", "step_mult", "initial_learning_rate",
                      "conv_step", "embedding_step"):
            if not 0 < getattr(self, field) < float("inf"):
                refuse(field, "must be positive and finite")
        if not abs(self.initial_fit_gain) < float("inf"):
            refuse("initial_fit_gain", "must be finite")
        for field in ("final_learning_rate", "weight_decay", "warmup_steps"):
            if not 0 <= getattr(self, field) < float("inf"):
                refuse(field, "must be non-negative and finite")

    def optimizer(self) -> lopt.LearnedOptimizer:
        settings = {"parameterization": self.parameterization}
        if self.architecture == "mlp_lopt":
            # With the schedule over the run, the time features of a run longer than any meta-training run
            # are compressed into the range meta-training showed (a no-op while meta-training itself).
            settings.update(hidden_size=self.hidden_size, step_mult=self.step_mult,
                            horizon_schedule=self.horizon_schedule, init_rule=self.init_rule,
                            role_scales=self.role_scales,
                            time_feature_horizon=self.max_inner_length if self.horizon_schedule else 0)
        elif self.architecture == "normalized_mlp":
            settings.update(hidden_size=self.hidden_size, orthogonalize=self.orthogonalize,
                            initial_learning_rate=self.initial_learning_rate, width_scaling=self.width_scaling,
                            tensor_magnitude=self.tensor_magnitude, feature_normalization=self.feature_normalization,
                            feature_sample=self.feature_sample, snr_inputs=self.snr_inputs,
                            fit_decay=self.fit_decay, initial_fit_gain=self.initial_fit_gain, conv_step=self.conv_step,
                            embedding_step=self.embedding_step, schedule=self.schedule)
        elif self.architecture == "lstm_lopt":
            settings.update(mlp_hidden_size=self.hidden_size, lstm_hidden_size=self.lstm_hidden_size)
        return lopt.ARCHITECTURES[self.architecture](**settings)

    def augmentation(self) -> tasks.Augmentation:
        return tasks.Augmentation(self.reparam, self.reparam_max, self.loss_scale_max)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def recorded_config(recorded: dict[str, Any]) -> dict[str, Any]:
    """A config as recorded by this or an older version (a run's config.json, a checkpoint's provenance),
    with fields added since at their defaults: a field is only ever added with the default that keeps the
    old behavior, so an older run is still the same config."""
    return {**dataclasses.asdict(MetaTrainConfig()), **recorded}


# Fields that shape one architecture only (the others ignore a preset's values; --set refuses them there).
ARCHITECTURE_FIELDS = {
    "mlp_lopt": ("step_mult", "horizon_schedule", "init_rule", "role_scales"),
    "normalized_mlp": ("orthogonalize", "initial_learning_rate", "width_scaling", "tensor_magnitude",
                       "feature_normalization", "feature_sample", "snr_inputs", "fit_decay", "initial_fit_gain",
                       "conv_step", "embedding_step", "schedule"),
}

# Fields that change what is logged, kept or shown, never theta: a resumed run may change them.
BOOKKEEPING_FIELDS = ("log_every", "checkpoint_every", "keep_checkpoints", "eval_task", "eval_steps")

# small_fc_lopt's recipe (a random theta, a fixed step scale: the field defaults), on muP MLPs.
SMALL_FC_LOPT = MetaTrainConfig()
# The mlp_lopt presets below start theta as per-tensor normalized Adam with a cosine schedule over the run,
# which meta-training then refines, instead of a random theta it would first have to make an optimizer of.
ADAM_START = dataclasses.replace(SMALL_FC_LOPT, step_mult=0.03, horizon_schedule=True, init_rule="adam")

# An earlier default's recipe (normalized_mixed): the normalized rule (lopt.normalized_mlp: per-tensor
# RMS-normalized output, step sizes by the spectral condition, Adam on vectors, warmup-cosine peak and
# weight decay learned in theta) on the mixed family in standard parameterization, with the mixed
# train / validation meta-loss averaged evenly over each run.
NORMALIZED = dataclasses.replace(SMALL_FC_LOPT, architecture="normalized_mlp", hidden_size=8, parameterization="sp",
                                 orthogonalize=False, width_scaling=True, initial_learning_rate=0.01,
                                 task_family="mixed_sp", num_task_configs=6, meta_loss_split="mix",
                                 outer_steps=2000, log_every=50, checkpoint_every=100)
# The shipped default's recipe (orthogonal_mixed): the same rule with its hidden matrices' directions
# orthogonalized by Newton-Schulz (Muon's step on the learned direction), and each step's meta-loss
# weighted by 2 (step / run length), so the end of a run counts most: the README measures both. Seed 1
# is the one shipped (of seeds 0-2, the best in distribution).
ORTHOGONAL = dataclasses.replace(NORMALIZED, orthogonalize=True, meta_loss_time_power=1.0, seed=1)
# The shipped default's rule (orthogonal_mixed_kinds): that recipe's rule with a weight decay that reads the
# training loss (lopt.fit_decay) and convolution kernels' and embedding tables' steps x5. The shipped
# theta is orthogonal_mixed's with the decay's gain set by hand (the README's "A decay that reads the training
# loss"); meta-trained from theta's start here, with the decay's gain starting where the shipped one is (2).
ORTHOGONAL_KINDS = dataclasses.replace(ORTHOGONAL, fit_decay=True, initial_fit_gain=2.0, conv_step=5.0,
                                       embedding_step=5.0)

# The theta entries the main job meta-trains: 12 numbers of the 173 in theta.
MAIN_JOB_ENTRIES = "log_learning_rate,log_weight_decay,log_group_scales,fit_decay,momentum_decays,second_moment_decays"

PRESETS: dict[str, MetaTrainConfig] = {
    # The README's main job, minutes on a 2-core CPU: the default's recipe for a quarter of its steps,
    # meta-training the rule's step sizes, decays and momentum timescales (MAIN_JOB_ENTRIES) from its
    # designed start, the per-parameter MLP held there: in 500 steps the ES estimate of all of theta is too
    # noisy to improve on that start (the README's main job measures both; `--set meta_train_only=` for all).
    "default": dataclasses.replace(ORTHOGONAL_KINDS, outer_steps=500, meta_train_only=MAIN_JOB_ENTRIES),
    # The recipe of orthogonal_mixed (the theta of the shipped default), about 20 minutes on a 2-core CPU alone.
    "orthogonal_cpu": ORTHOGONAL,
    # An earlier default's (normalized_mixed), about 15 minutes on a 2-core CPU alone.
    "normalized_cpu": NORMALIZED,
    # small_fc_lopt's MLP started as normalized Adam, on MLPs of widths 32-128 on 8x8 and 14x14 images
    # (the default until the normalized rule), about ten minutes on a 2-core CPU.
    "small_fc": ADAM_START,
    # The muLO paper's recipe (Therien et al. 2024): widths 128-1024, PES truncation 50, sigma 0.01,
    # 8 perturbed tasks, inner lengths 100-1000, hidden 32, 5,000 outer steps. Needs an accelerator. With
    # role_scales: for mulo_small_fc on MNIST MLPs at 200 steps the best readout step constant grows with
    # width up to about 1,000 units (x2 at 32-128, x4 from 512 on), so these widths show it where 32-128
    # do not (a mulo_cpu run with role_scales learned 0.77 / 1.03 / 1.02 for input / hidden / output).
    "mulo": dataclasses.replace(ADAM_START, hidden_size=32, task_family="mlp_images_wide", num_task_configs=3,
                                num_tasks=8, truncation_length=50, outer_steps=5000, warmup_steps=250,
                                checkpoint_every=500, role_scales=True),
    # The shipped muP optimizer's recipe for a 2-core CPU (about 10 minutes): the default with twice the
    # task configs (16 workers, covering every image set, width and depth of the family), 1,000 outer steps.
    "mulo_cpu": dataclasses.replace(ADAM_START, num_task_configs=4, outer_steps=1000, log_every=50,
                                    checkpoint_every=250),
    # Its standard-parameterization twin: the same recipe on the same MLPs in standard parameterization
    # (a smaller step_mult, as standard-parameterized MLPs of these widths need smaller steps).
    "sp_cpu": dataclasses.replace(ADAM_START, parameterization="sp", task_family="mlp_images_sp", num_task_configs=4,
                                  step_mult=0.003, outer_steps=1000, log_every=50, checkpoint_every=250),
    # Every model family in one run on a 2-core CPU: MLPs, conv nets, transformer and LSTM language models
    # (tasks.MIXED_CPU, 6 shape buckets), runs restarting on either dataset of their bucket, the mixed
    # train / validation meta-loss.
    "mixed_cpu": dataclasses.replace(ADAM_START, task_family="mixed", num_task_configs=6, meta_loss_split="mix",
                                     outer_steps=2000, log_every=50, checkpoint_every=100),
    # Its accelerator twin: the same buckets at muLO-like widths, hidden 32, truncation 50, 8 workers a bucket.
    "mixed": dataclasses.replace(ADAM_START, task_family="mixed_wide", num_task_configs=6, meta_loss_split="mix",
                                 hidden_size=32, num_tasks=8, truncation_length=50, outer_steps=5000,
                                 warmup_steps=250, checkpoint_every=500),
    # Seconds: a 10-d quadratic family, for trying the machinery and for tests. The normalized rule from
    # its untrained start (per-tensor normalized Adam under a warmup-cosine schedule peaking at 0.1).
    "quadratic": dataclasses.replace(SMALL_FC_LOPT, architecture="normalized_mlp", hidden_size=8, parameterization="sp",
                                     initial_learning_rate=0.1, task_family="quadratics", num_task_configs=1,
                                     num_tasks=8, truncation_length=10, min_inner_length=50, max_inner_length=200,
                                     outer_steps=1000, warmup_steps=10, log_every=50, checkpoint_every=250,
                                     eval_task="quadratic_10d", eval_steps=200, max_meta_loss=10.0),
}


PRESET_DESCRIPTIONS = {
    "default": "minutes on a 2-core CPU: the shipped default's rule on the mixed family, its step sizes, decays and momenta meta-trained for a quarter of orthogonal_cpu's steps",
    "orthogonal_cpu": "the recipe of the shipped default's theta (orthogonal_mixed): normalized rule, hidden matrices orthogonalized, mixed family (sp), end-weighted mixed meta-loss (CPU)",
    "normalized_cpu": "an earlier default's recipe: normalized rule, mixed family (sp), mixed meta-loss (CPU)",
    "small_fc": "small_fc_lopt's MLP from an Adam start on MLPs of widths 32-128 (an earlier default; CPU)",
    "mulo": "the muLO paper's recipe (widths 128-1024, hidden 32, 8 workers, 5,000 steps); an accelerator",
    "mulo_cpu": "the shipped muP optimizer's recipe: 4 task configs, Adam-like start, 1,000 steps (CPU, ~10 min)",
    "sp_cpu": "the same recipe in standard parameterization, the muP optimizer's twin",
    "mixed_cpu": "MLPs, conv nets, transformer and LSTM LMs in one run, mixed train/valid meta-loss (CPU)",
    "mixed": "the same families at muLO-like widths, hidden 32, 8 workers a bucket; an accelerator",
    "quadratic": "seconds: 10-d quadratics, the normalized rule; for trying the machinery (see the README)",
}


def preset(name: str) -> MetaTrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def describe_fields(config: MetaTrainConfig | None = None) -> str:
    """Every field with its type, its value in `config` (a preset, with --set applied; the defaults if
    None) and its comment, read from this file's source; a value that differs from the field's default
    says so."""
    config = config or MetaTrainConfig()
    defaults = MetaTrainConfig()
    lines = []
    for line in (line.strip() for line in inspect.getsource(MetaTrainConfig).splitlines()):
        if line.startswith("# ---"):
            lines.append(line)
            continue
        match = re.match(r"(\w+): (\w+) = .*?(  # .*)$", line)
        if match and match.group(1) in {field.name for field in dataclasses.fields(MetaTrainConfig)}:
            name, kind, comment = match.groups()
            value, default = getattr(config, name), getattr(defaults, name)
            changed = "" if value == default else f" (default {default!r})"
            lines.append(f"{name}: {kind} = {value!r}{changed}{comment}")
    return "\n".join(lines)


def with_overrides(config: MetaTrainConfig, assignments: list[str]) -> MetaTrainConfig:
    """The config with `field=value` assignments applied, each value parsed as its field's type."""
    fields = {field.name: field for field in dataclasses.fields(config)}
    hints = typing.get_type_hints(MetaTrainConfig)
    changes: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep:
            raise ConfigError(f"--set expects FIELD=VALUE, got {assignment!r}")
        if name not in fields:
            raise ConfigError(f"unknown config field {name!r}; fields: {', '.join(fields)}")
        kind = hints[name].__name__
        try:
            changes[name] = _PARSERS[kind](text)
        except ValueError:
            expected = "true or false" if kind == "bool" else f"{'an' if kind == 'int' else 'a'} {kind}"
            raise ConfigError(f"{name} takes {expected}, got {text!r}") from None
    architecture = changes.get("architecture", config.architecture)
    for owner, owned in ARCHITECTURE_FIELDS.items():
        typed = sorted(set(changes) & set(owned))
        if architecture != owner and typed:  # a preset's values are ignored; a typed one is a mistake
            raise ConfigError(f"{', '.join(typed)}: {', '.join(owned)} apply to {owner} only, "
                              f"and architecture is {architecture}")
    return dataclasses.replace(config, **changes)
