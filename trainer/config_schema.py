"""Strict YAML -> frozen dataclass loading shared by every config of the project.

Unknown keys, missing required keys and wrong types are errors that name the file and the key path.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Hashable
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigError(ValueError):
    """A config file that does not match its schema; the message names the file and the key."""


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping that repeats a key (PyYAML would keep the last value silently)."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a mapping repeating a key is an error; every config YAML of the
    project is read with it (`parse_yaml`)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:  # `<<: *anchor` may be overridden by the mapping's own keys
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in lines:
                raise DuplicateKeyError(problem=f"{key}: duplicate key (lines {lines[key]} and {line})")
            if isinstance(key, Hashable):
                lines[key] = line
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """The mapping at the top of YAML text read from `source` (safe, duplicate keys rejected)."""
    loader = UniqueKeyLoader(text)
    try:
        data = loader.get_single_data()
    except DuplicateKeyError as error:
        raise ConfigError(f"{source}: {error.problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def read_text(path: str | Path) -> str:
    """The text of a config file; a missing or non-UTF-8 file is a ConfigError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a directory, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping at the top of a YAML file."""
    return parse_yaml(read_text(path), str(path))


def finite_float(value: object) -> float:
    """`value` (an int or float, not a bool) as a finite float; TypeError otherwise (.inf and .nan too)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"expected float, got {_describe(value)}")
    if not math.isfinite(value):
        raise TypeError(f"expected a finite number, got {value!r}")
    return float(value)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _convert(value: Any, annotation: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where, source)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{source}: {where}: unexpected {_describe(value)}"
        )
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, source, where)
    if origin is dict:
        key_type, value_type = typing.get_args(annotation) or (str, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {where}: expected a mapping, got {_describe(value)}")
        return {
            _convert(k, key_type, where, source): _convert(v, value_type, f"{where}.{k}", source)
            for k, v in value.items()
        }
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: {where}: expected a list, got {_describe(value)}")
        return tuple(_convert(v, item_type, f"{where}[{i}]", source) for i, v in enumerate(value))
    if annotation is Any:
        return value
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(
                f"{source}: {where}: expected one of {list(typing.get_args(annotation))}, got {value!r}"
            )
        return value
    if annotation is float:
        try:
            return finite_float(value)
        except TypeError as error:
            raise ConfigError(f"{source}: {where}: {error}") from None
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {where}: expected {annotation.__name__}, got {_describe(value)}")
    return value


def build(cls: type[T], data: Any, source: str, where: str = "") -> T:
    """Instantiate dataclass `cls` from a mapping, checking keys and types recursively."""
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where or 'top level'}: expected a mapping, got {_describe(data)}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)  # YAML keys may be numbers
    if unknown:
        raise ConfigError(f"{source}: {prefix}{unknown[0]}: unknown key (valid keys: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _convert(data[name], hints[name], f"{prefix}{name}", source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: {prefix}{name}: required key is missing")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: {where or 'top level'}: {error}") from None


def load(cls: type[T], path: str | Path) -> T:
    """Read a YAML file into dataclass `cls`."""
    return build(cls, read_yaml(path), str(path))
