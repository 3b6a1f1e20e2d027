"""Type aliases shared by the learned optimizers."""

from typing import Any, Literal

import jax

PRNGKey = jax.Array
Params = Any  # a task's parameters: any pytree of arrays
MetaParams = Any  # theta, a learned optimizer's own parameters: a pytree of float32 arrays
Roles = Any  # a pytree like Params of "input" | "hidden" | "output"
Role = Literal["input", "hidden", "output"]
ROLES = ("input", "hidden", "output")
PARAMETERIZATIONS = ("mup", "sp")
