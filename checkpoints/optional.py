"""Packages outside the core install (`pip install lopt` brings jax, flax, optax, orbax-checkpoint and
numpy; `lopt[train]`, `lopt[eval]` and `lopt[all]` the rest), imported where they are first needed.

    tensorboard = require("tensorboard", "writing TensorBoard events", "train")

A missing one is reported in one line that names the extra to install, e.g.
`ModuleNotFoundError: writing TensorBoard events needs tensorboard: pip install 'lopt[train]'`.
This module imports nothing of ours, so every package may use it."""

from __future__ import annotations

import importlib
from types import ModuleType

# The name pip knows a package by, where it differs from the module's.
_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def missing_message(module_name: str, what: str, extra: str) -> str:
    """The one line that reports a missing optional package."""
    package = _DISTRIBUTIONS.get(module_name.partition(".")[0], module_name.partition(".")[0])
    return f"{what} needs {package}: pip install 'lopt[{extra}]'"


def require(module_name: str, what: str, extra: str) -> ModuleType:
    """The module `module_name` (dotted names allowed), or ModuleNotFoundError in one line saying that
    `what` needs it and which extra of lopt installs it. Only the package itself being absent is
    reported so: an import error from inside an installed package propagates unchanged."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        top = module_name.partition(".")[0]
        if error.name is not None and error.name != top and not module_name.startswith(f"{error.name}."):
            raise  # the package is there, something it imports is not: its own error says more
        raise ModuleNotFoundError(missing_message(module_name, what, extra), name=top) from None
