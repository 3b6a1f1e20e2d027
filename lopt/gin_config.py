"""Reads gin binding files (the `config.gin` learned_optimization writes beside a checkpoint) as data,
without gin: nothing is imported or called, references stay names.

Understood: bindings `scope/Name.arg = value` (the configurable may carry a module path, `a.b.Name.arg`),
macros `NAME = value` and `%NAME`, references `@scope/Name()` and `@Name`, literals (ints, floats, bools,
None, strings, tuples, lists, dicts), `#` comments, values continued over lines inside brackets or after a
trailing backslash. `import`, `from ... import` and `include` lines are skipped.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from typing import Any

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<reference>@[A-Za-z_][\w./]*(?:\(\))?)
  | (?P<macro>%[A-Za-z_][\w./]*)
  | (?P<name>[A-Za-z_]\w*)
  | (?P<punctuation>[\[\](){},:])
""", re.VERBOSE)
_KEY = re.compile(r"^[A-Za-z_][\w./]*$")
_CONSTANTS = {"True": True, "False": False, "None": None}


class GinError(ValueError):
    """A config file this reader cannot parse."""


@dataclasses.dataclass(frozen=True)
class Reference:
    """`@scope/module.Name()` (called) or `@Name`: a configurable, by name."""

    name: str  # the configurable's own name, without module path or scope
    scope: str  # "" when unscoped
    called: bool


@dataclasses.dataclass(frozen=True)
class Macro:
    name: str


@dataclasses.dataclass(frozen=True)
class Unparsed:
    """A value this reader does not understand, kept as its text (parse with strict=False)."""

    text: str


def parse(text: str, source: str = "config.gin", strict: bool = True) -> dict[str, Any]:
    """{"scope/Name.arg" or "MACRO": value}; a later binding of the same key replaces an earlier one, as
    in gin. The configurable's module path is dropped from keys (`a.b.Name.arg` -> `Name.arg`).

    strict=False keeps a value it cannot read as Unparsed and skips a line that is no binding, so that a
    training run's full config loads whatever its unrelated bindings hold.
    """
    bindings = {}
    for line_number, statement in _statements(text, source):
        if re.match(r"(import|from|include)\s", statement):
            continue
        key, equals, value = statement.partition("=")
        key = key.strip()
        if not equals or not _KEY.match(key):
            if not strict:
                continue
            raise GinError(f"{source}:{line_number}: expected `Name.argument = value`, found {statement!r}")
        try:
            bindings[_short_key(key)] = _parse_value(value, f"{source}:{line_number}")
        except GinError:
            if strict:
                raise
            bindings[_short_key(key)] = Unparsed(value.strip())
    return bindings


def arguments(bindings: dict[str, Any], reference: Reference) -> dict[str, Any]:
    """The arguments bound for the configurable a reference names: its unscoped bindings, overridden by
    those of the reference's scope and of each enclosing scope (gin's rule: the most specific wins)."""
    found = {}
    scopes = reference.scope.split("/") if reference.scope else []
    for depth in range(len(scopes) + 1):
        prefix = "/".join(scopes[:depth])
        selector = f"{prefix}/{reference.name}." if prefix else f"{reference.name}."
        for key, value in bindings.items():
            if key.startswith(selector) and "." not in key[len(selector):]:
                found[key[len(selector):]] = _resolve(value, bindings)
    return found


def _resolve(value: Any, bindings: dict[str, Any]) -> Any:
    """value with each macro replaced by its binding (a macro bound nowhere stays a Macro)."""
    if isinstance(value, Macro):
        return _resolve(bindings[value.name], bindings) if value.name in bindings else value
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(item, bindings) for item in value)
    if isinstance(value, dict):
        return {key: _resolve(item, bindings) for key, item in value.items()}
    return value


def _short_key(key: str) -> str:
    scope, _, selector = key.rpartition("/")
    parts = selector.split(".")
    short = ".".join(parts[-2:])
    return f"{scope}/{short}" if scope else short


def _statements(text: str, source: str):
    """(first line number, statement) for each statement, comments removed, continuations joined."""
    depth, quote, start_line, current = 0, None, 1, []
    line_number = 1
    index = 0
    while index < len(text):
        char = text[index]
        if quote:
            current.append(char)
            if char == "\\" and index + 1 < len(text):
                current.append(text[index + 1])
                index += 1
            elif char == quote or char == "\n":
                quote = None
        elif char == "#":
            while index + 1 < len(text) and text[index + 1] != "\n":
                index += 1
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == "\\" and text[index + 1:index + 2] == "\n":
            current.append(" ")
            index += 1
            line_number += 1
        elif char == "\n" and depth <= 0:
            if "".join(current).strip():
                yield start_line, "".join(current).strip()
            current, depth = [], 0
            start_line = line_number + 1
        else:
            depth += char in "([{"
            depth -= char in ")]}"
            current.append(" " if char == "\n" else char)
        if char == "\n":
            line_number += 1
        index += 1
    if quote or depth > 0:
        raise GinError(f"{source}:{start_line}: unclosed {'string' if quote else 'bracket'} at the end of the file")
    if "".join(current).strip():
        yield start_line, "".join(current).strip()


def _tokens(text: str, where: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise GinError(f"{where}: cannot read {text[position:position + 30]!r}")
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group()))
        position = match.end()
    return tokens


def _parse_value(text: str, where: str) -> Any:
    tokens = _tokens(text, where)
    if not tokens:
        raise GinError(f"{where}: a binding without a value")
    value, position = _value(tokens, 0, where)
    if position != len(tokens):
        raise GinError(f"{where}: unexpected {tokens[position][1]!r} after the value")
    return value


def _value(tokens, position: int, where: str) -> tuple[Any, int]:
    if position >= len(tokens):
        raise GinError(f"{where}: the value ends too early")
    kind, text = tokens[position]
    if kind == "string":
        return ast.literal_eval(text), position + 1
    if kind == "number":
        is_int = re.fullmatch(r"[-+]?\d+", text)
        return (int(text) if is_int else float(text)), position + 1
    if kind == "reference":
        path = text[1:].removesuffix("()")
        scope, _, name = path.rpartition("/")
        return Reference(name=name.rpartition(".")[2], scope=scope, called=text.endswith("()")), position + 1
    if kind == "macro":
        return Macro(text[1:]), position + 1
    if kind == "name" and text in _CONSTANTS:
        return _CONSTANTS[text], position + 1
    if text in "([{":
        return _container(tokens, position, where)
    raise GinError(f"{where}: unexpected {text!r}")


def _container(tokens, position: int, where: str) -> tuple[Any, int]:
    opening = tokens[position][1]
    closing = {"(": ")", "[": "]", "{": "}"}[opening]
    items, position, trailing_comma = [], position + 1, False
    while position < len(tokens) and tokens[position][1] != closing:
        item, position = _value(tokens, position, where)
        if opening == "{":
            if position >= len(tokens) or tokens[position][1] != ":":
                raise GinError(f"{where}: a dict entry needs `key: value`")
            entry, position = _value(tokens, position + 1, where)
            item = (item, entry)
        items.append(item)
        trailing_comma = position < len(tokens) and tokens[position][1] == ","
        if trailing_comma:
            position += 1
        elif position < len(tokens) and tokens[position][1] != closing:
            raise GinError(f"{where}: expected ',' or {closing!r}, found {tokens[position][1]!r}")
    if position >= len(tokens):
        raise GinError(f"{where}: missing {closing!r}")
    if opening == "[":
        return items, position + 1
    if opening == "{":
        return dict(items), position + 1
    # (x) is x, as in Python; (x,) and (x, y) are tuples.
    return (items[0] if len(items) == 1 and not trailing_comma else tuple(items)), position + 1
