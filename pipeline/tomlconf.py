"""Typed loading of TOML files into frozen dataclasses.

Every config type in the project (models, targets, calibration recipes) goes through
`load_dataclass`: unknown fields, wrong types and out-of-range values are reported
with the file, the field, the value and what is allowed. A file may say
`extends = "other"` to inherit every field of `other.toml` in the same folder.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; a missing or malformed file is a `ConfigError`."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror}).") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml_with_extends(path: Path) -> dict[str, Any]:
    """Read `path`, resolving `extends = "name"` chains within its folder.

    Raises `ConfigError` on a cycle, naming the chain.
    """
    chain: list[Path] = []
    layers: list[dict[str, Any]] = []
    current: Path | None = path
    while current is not None:
        resolved = current.resolve()
        if resolved in chain:
            names = " -> ".join(p.stem for p in chain + [resolved])
            raise ConfigError(f"{path}: `extends` forms a cycle ({names}).")
        chain.append(resolved)
        data = read_toml(current)
        parent = data.pop("extends", None)
        layers.append(data)
        if parent is None:
            current = None
        elif not isinstance(parent, str) or not parent:
            raise ConfigError(f"{current}: field `extends` must be the name of another file, got {parent!r}.")
        else:
            current = current.parent / f"{parent}.toml"
            if not current.exists():
                raise ConfigError(f"{chain[-1]}: `extends = {parent!r}` but {current} does not exist.")
    merged: dict[str, Any] = {}
    for layer in reversed(layers):
        merged = _merge(merged, layer)
    return merged


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}"
    if dataclasses.is_dataclass(tp) or tp is dict or origin is dict:
        return "table"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a {_type_name(tp)}, got {value!r}.")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}.")
        return _build(tp, value, where)
    if tp is dict or origin is dict:  # a free-form table, checked by its owner
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}.")
        return copy.deepcopy(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}.")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}.")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}.")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}.")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field `{unknown[0]}`; allowed fields are {', '.join(sorted(fields))}.")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{where}: field `{name}`")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: required field `{name}` is missing.")
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return obj


def load_dataclass(cls: type[T], data: dict[str, Any], source: str) -> T:
    """Build `cls` from a parsed TOML table; `source` names the file in errors.

    Dataclasses may define `__post_init__` raising `ConfigError` for range checks.
    """
    return _build(cls, data, source)


def load_named(cls: type[T], name_or_path: str, folder: Path, kind: str) -> T:
    """Load `<folder>/<name>.toml` (or a path ending in .toml) into `cls`, resolving `extends`.

    The file's stem becomes the `name` field unless the file sets one.
    """
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = folder / f"{name_or_path}.toml"
        if not p.exists():
            known = ", ".join(sorted(q.stem for q in folder.glob("*.toml") if not q.stem.startswith("_")))
            raise ConfigError(f"unknown {kind} {name_or_path!r}; known {kind}s: {known}.")
    if not read_toml(p):
        raise ConfigError(
            f'{p} is empty: a {kind} file sets at least one field (`extends = "<name>"` starts from another one).'
        )
    data = read_toml_with_extends(p)
    data.setdefault("name", p.stem)
    return load_dataclass(cls, data, str(p))


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass → plain dict of TOML/JSON-compatible values (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return conv(obj)


def check(condition: bool, message: str) -> None:
    """Raise `ConfigError(message)` unless `condition`; for `__post_init__` range checks."""
    if not condition:
        raise ConfigError(message)
