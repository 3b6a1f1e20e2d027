"""Procedural tasks that need no data files: noisy quadratics and teacher-student regression."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import (PARAMETERIZATIONS, Task, TaskConfig, require, require_choice,
                        require_positive_int)
from tasks.models import ACTIVATIONS, MLP
from tasks.array_task import ArrayTask
from tasks.supervised import built_once, supervised_task


@dataclasses.dataclass(frozen=True)
class QuadraticConfig(TaskConfig):
    """Minimize 0.5 x^T A x + noise . x, with A a random rotation of log-spaced eigenvalues in
    [1, condition_number]; the noise makes gradients stochastic like minibatch gradients."""

    kind = "quadratic"
    dim: int = 10  # number of parameters
    condition_number: float = 100.0  # ratio of A's largest to smallest eigenvalue
    noise_std: float = 0.0  # std of the linear noise term a batch adds
    seed: int = 0  # draws A; the same seed gives the same problem

    def __post_init__(self):
        require_positive_int(self, "dim")
        require(self.condition_number >= 1, self, "condition_number", "must be at least 1")
        require(self.noise_std >= 0, self, "noise_std", "must be non-negative")
        require(isinstance(self.seed, int), self, "seed", "must be an integer")

    def build(self) -> "QuadraticTask":
        return QuadraticTask(self)


@functools.lru_cache(maxsize=64)
def _quadratic_matrix(config: QuadraticConfig) -> jax.Array:
    rng = np.random.default_rng(config.seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(config.dim, config.dim)))
    eigenvalues = np.geomspace(1.0, config.condition_number, config.dim)
    with jax.ensure_compile_time_eval():  # concrete even when first asked for inside a trace
        return jnp.asarray((rotation * eigenvalues) @ rotation.T, jnp.float32)


class QuadraticTask(Task):
    def __init__(self, config: QuadraticConfig):
        self.config = config
        # E[0.5 x^T A x] at the N(0, I) init is 0.5 trace(A): the loss an untrained run starts at.
        self._initial_loss = 0.5 * float(np.sum(np.geomspace(1.0, config.condition_number, config.dim)))

    @property
    def data(self):
        return {"matrix": _quadratic_matrix(self.config)}

    def init(self, key):
        return {"x": jax.random.normal(key, (self.config.dim,))}

    def batch(self, data, key, split: str = "train"):
        del split  # every split draws the same kind of noise
        # The batch carries A so that the loss reads it as an argument, not a compiled-in constant.
        return {"matrix": data["matrix"],
                "noise": self.config.noise_std * jax.random.normal(key, (self.config.dim,))}

    def held_out(self, data, split: str = "valid"):
        del split  # the noise-free objective
        return {"matrix": data["matrix"], "noise": jnp.zeros((self.config.dim,), jnp.float32)}

    def loss_and_aux(self, params, batch, key):
        del key
        x = params["x"]
        return 0.5 * x @ batch["matrix"] @ x + batch["noise"] @ x, {}

    def roles(self, params):
        return {"x": "input"}

    def normalize_loss(self, loss):
        return loss / self._initial_loss


@dataclasses.dataclass(frozen=True)
class TeacherStudentConfig(TaskConfig):
    """Regression onto a fixed random teacher network plus noise, with an MLP student."""

    kind = "teacher_student"
    input_dim: int = 16  # features of each input, drawn from N(0, I)
    teacher_width: int = 32  # hidden units of the one-hidden-layer tanh teacher
    width: int = 64  # hidden units of every student layer
    depth: int = 2  # hidden layers of the student
    activation: str = "relu"  # student activation, one of tasks.models.ACTIVATIONS
    noise_std: float = 0.1  # std of the noise added to the teacher's outputs
    batch_size: int = 64  # examples a training step
    seed: int = 0  # draws the teacher and the examples
    parameterization: str = "mup"  # "mup" or "sp" (standard)

    def __post_init__(self):
        require_positive_int(self, "input_dim", "teacher_width", "width", "depth", "batch_size")
        require_choice(self, "activation", tuple(ACTIVATIONS))
        require(self.noise_std >= 0, self, "noise_std", "must be non-negative")
        require(isinstance(self.seed, int), self, "seed", "must be an integer")
        require_choice(self, "parameterization", PARAMETERIZATIONS)

    @built_once
    def build(self) -> ArrayTask:
        data = _teacher_student_arrays(self.input_dim, self.teacher_width, self.noise_std, self.seed)
        student = MLP(width=self.width, depth=self.depth, num_outputs=1, activation=self.activation,
                      parameterization=self.parameterization)
        # A zero-initialized muP readout predicts 0, so the starting loss is the targets' mean square.
        loss_scale = float(jnp.mean(jnp.square(data["train"]["target"])))
        return supervised_task(self, student, data, (self.input_dim,), "mse", loss_scale)


# Examples in each split: a fixed pool, so splits are disjoint draws and every run sees the same data.
TEACHER_STUDENT_SPLIT_SIZES = {"train": 8192, "valid": 1024, "test": 1024}


@functools.lru_cache(maxsize=16)
def _teacher_student_arrays(input_dim: int, teacher_width: int, noise_std: float, seed: int):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(input_dim, teacher_width)) / np.sqrt(input_dim)
    readout = rng.normal(size=teacher_width) / np.sqrt(teacher_width)
    splits = {}
    for split, size in TEACHER_STUDENT_SPLIT_SIZES.items():
        inputs = rng.normal(size=(size, input_dim))
        targets = np.tanh(inputs @ hidden) @ readout + noise_std * rng.normal(size=size)
        splits[split] = {"input": inputs.astype(np.float32), "target": targets.astype(np.float32)}
    with jax.ensure_compile_time_eval():  # concrete even when first asked for inside a trace
        return jax.device_put(splits)
