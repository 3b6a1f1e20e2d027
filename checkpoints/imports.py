"""The user's own objects named on a command line as `module.path:attribute`, resolved the way uvicorn
and gunicorn resolve an app: the module is imported with the current directory on sys.path, and the
attribute (dotted names allowed) is read from it. Every command line that takes one of our names takes
such a path too, through this one function. This module imports nothing of ours.

    tasks_list = resolve_import_path("my_project.bench:TASKS", "a list of tasks", is_task_list)
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any, Callable


class ImportPathError(ValueError):
    """An import path that is malformed, names no module or attribute, or names the wrong kind of object."""


def looks_like_import_path(text: str) -> bool:
    """Whether a command-line value is meant as `module:attribute` rather than a name or a file: it has
    one colon between two non-empty parts and is no existing file."""
    module, colon, attribute = str(text).partition(":")
    return bool(colon) and not os.path.exists(text) and "/" not in module and "\\" not in module


def resolve_import_path(text: str, what: str, accepts: Callable[[Any], bool]) -> Any:
    """The object `module.path:attribute` names. `what` describes the object the caller expects (for the
    error) and `accepts` says whether an object is one; an attribute that is not one but can be called
    without arguments (a factory) is called, and its result must be one. Raises ImportPathError in one
    line for a malformed path, a module or attribute not found, and an object of the wrong kind; an
    exception raised by the user's own module or factory propagates unchanged, with its traceback."""
    module_name, _, attribute = str(text).partition(":")
    parts = attribute.split(".")
    if not (module_name and all(name.isidentifier() for name in module_name.split("."))
            and all(name.isidentifier() for name in parts)):
        raise ImportPathError(f"{text!r} is not of the form module.path:attribute")
    # As `python -m` and uvicorn do: modules beside the command are importable, wherever the code lives.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    importlib.invalidate_caches()  # a module written since the last import is seen
    try:
        found = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name == error.name or module_name.startswith(f"{error.name}.")):
            raise ImportPathError(f"{text}: no module named {module_name!r} (looked in the current directory "
                                  "and on sys.path)") from None
        raise ImportPathError(f"{text}: importing {module_name!r} failed: {error}") from None
    for depth, name in enumerate(parts):
        if not hasattr(found, name):
            owner = ".".join([module_name] if depth == 0 else parts[:depth])
            raise ImportPathError(f"{text}: {owner!r} has no attribute {name!r}")
        found = getattr(found, name)
    if accepts(found):
        return found
    if callable(found) and _callable_without_arguments(found):
        made = found()
        if accepts(made):
            return made
        raise ImportPathError(f"{text}: {attribute}() returned {_kind(made)}, not {what}")
    raise ImportPathError(f"{text}: {attribute} is {_kind(found)}, not {what}")


def _callable_without_arguments(function: Callable) -> bool:
    try:
        inspect.signature(function).bind()
    except TypeError:
        return False
    except ValueError:  # a builtin without a signature: called, as it may well take no arguments
        return True
    return True


def _kind(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {_qualified(value)}"
    name = _qualified(type(value))
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _qualified(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
