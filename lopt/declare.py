"""Settings declared once: a dataclass field with its help text, parsed from text and described from the
declaration itself, so that a config, `--set FIELD=VALUE` and `--fields` read one source.

    hidden_size: int = setting(8, "units of each hidden layer of the per-parameter MLP")
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def setting(default: Any, help: str) -> Any:  # noqa: A002 (argparse's name for the same thing)
    """A dataclass field with its default and the one line `--fields` shows for it."""
    return dataclasses.field(default=default, metadata={"help": help})


def help_of(field: dataclasses.Field) -> str:
    return field.metadata.get("help", "")


def field_types(cls: type) -> dict[str, Any]:
    """The declared type of each dataclass field (class variables such as `architecture` left out)."""
    hints = typing.get_type_hints(cls)
    return {field.name: hints[field.name] for field in dataclasses.fields(cls)}


def type_name(kind: Any) -> str:
    """int, float, str, bool, float | None, tuple[float, ...] as a reader writes them."""
    if isinstance(kind, type) and not typing.get_args(kind):
        return kind.__name__
    return str(kind).replace("typing.", "")


def parse(kind: Any, text: str) -> Any:
    """A value of the declared type from command-line text; ValueError naming what was expected."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return parse(inner, text)
    if typing.get_origin(kind) is tuple:
        return tuple(parse(args[0], part) for part in text.split(",") if part.strip())
    if kind is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError("true or false")
    if kind in (int, float, str):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{'an' if kind is int else 'a'} {kind.__name__}") from None
    raise ValueError(f"a {type_name(kind)}, which the command line cannot write")


def check_types(obj: Any) -> str | None:
    """The first field whose value is not of its declared type, as 'FIELD=VALUE: must be ...', or None."""
    for field in dataclasses.fields(obj):
        kind, value = field_types(type(obj))[field.name], getattr(obj, field.name)
        if not _is_instance(value, kind):
            return f"{field.name}={value!r}: must be {'an' if kind is int else 'a'} {type_name(kind)}"
    return None


def _is_instance(value: Any, kind: Any) -> bool:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, arg) for arg in args)
    if kind is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, (tuple, list)) and all(_is_instance(item, args[0]) for item in value)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(kind, type):
        return isinstance(value, kind)
    return True


def describe(obj: Any, prefix: str = "") -> list[str]:
    """One line a field: `PREFIX.NAME: TYPE = VALUE (default D)  # HELP`, from the declarations."""
    defaults = type(obj)()
    hints = field_types(type(obj))
    lines = []
    for field in dataclasses.fields(obj):
        value, default = getattr(obj, field.name), getattr(defaults, field.name)
        changed = "" if value == default else f" (default {default!r})"
        comment = f"  # {help_of(field)}" if help_of(field) else ""
        lines.append(f"{prefix}{field.name}: {type_name(hints[field.name])} = {value!r}{changed}{comment}")
    return lines
