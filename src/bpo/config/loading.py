"""Reading a recipe: YAML file, dotted overrides, types and keys checked, sizes bounded."""

from __future__ import annotations

import difflib
import os
import reprlib
import types
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from bpo.config.checks import check_recipe
from bpo.config.run_sections import Recipe
from bpo.errors import ConfigError

# Bounds on a recipe's values once YAML anchors are expanded: a real recipe has a
# few hundred values, 4 levels deep. Past these, a "billion laughs" file (anchors of
# anchors, 9 aliases a level, expand to 9**n values) or an alias that contains
# itself would blow up in `save_recipe` or in an error message's repr.
MAX_VALUES = 10_000
MAX_DEPTH = 32
# How much of a wrong value an error message shows.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxstring = 3, 6, 6, 80


def load_recipe(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> Recipe:
    """Read a YAML recipe (or the defaults when `path` is None) and apply dotted overrides.

    Args:
        path: the recipe file.
        overrides: ``section.key=value`` strings; values are parsed as YAML (``8``,
            ``1e-5``, ``true``, ``[q_proj, v_proj]``, ``null``).

    Raises:
        ConfigError: for a missing or malformed file, an unknown key or a wrong type,
            naming the key and where it came from.
    """
    import yaml

    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read recipe {path}: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {error.start}); is it a recipe?"
            ) from None
        try:
            loaded = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, RecursionError) as error:
            # ValueError: an integer of more than 4300 digits (Python's limit);
            # RecursionError: brackets nested past Python's recursion limit.
            reason = "nested too deeply" if isinstance(error, RecursionError) else error
            raise ConfigError(f"{path}: not valid YAML: {_first_line(reason)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections")
        check_size(loaded, source=source)
        data = loaded
        count = data.get("rounds")
        if isinstance(count, int) and not isinstance(count, bool):  # `rounds: N`, short
            data["rounds"] = {"count": count}
    recipe = from_dict(Recipe, data, source=source)
    origins: dict[str, str] = {}
    for override in overrides:
        apply_override(recipe, override)
        origins[override.partition("=")[0].strip()] = f"override {override!r}"
    check_recipe(recipe, source=source, origins=origins)
    return recipe


def apply_override(config: Any, override: str) -> None:
    """Set one ``dotted.key=value`` on a config dataclass, checking the key and the type."""
    import yaml

    source = f"override {override!r}"
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{source}: expected key=value, e.g. train.learning_rate=1e-5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # not YAML: the text itself
        value = raw
    check_size(value, source=source)
    parts = key.split(".")
    target = config
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        if isinstance(target, dict):  # a free-form mapping such as train.trl
            if depth == len(parts) - 1:
                target[part] = value
                return
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{source}: {prefix}.{part} is not a mapping")
            continue
        known = {f.name: f for f in fields(target)}
        if part not in known:
            raise ConfigError(_unknown_key(source, prefix, part, list(known)))
        if depth == len(parts) - 1:
            hints = get_type_hints(type(target))
            setattr(target, part, _coerce(value, hints[part], key, source, known[part]))
            return
        target = getattr(target, part)
        if not (is_dataclass(target) or isinstance(target, dict)):
            raise ConfigError(f"{source}: {prefix + '.' if prefix else ''}{part} is not a section")


def check_size(
    value: Any, *, source: str, max_values: int = MAX_VALUES, max_depth: int = MAX_DEPTH
) -> None:
    """Refuse a value with more than `max_values` values or `max_depth` levels, aliases expanded.

    Raises:
        ConfigError: naming `source`. A value that contains itself (``&a [*a]``)
            is refused too: it is infinitely deep.
    """
    budget = max_values
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(
                f"{source}: more than {max_values} values once YAML anchors are expanded "
                "(an alias bomb?)"
            )
        if depth > max_depth:
            raise ConfigError(
                f"{source}: nested more than {max_depth} levels deep "
                "(or an anchor that contains itself)"
            )
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for pair in node.items() for child in pair)
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


def from_dict(cls: type[Any], data: Any, *, source: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        where = prefix or "the recipe"
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(_unknown_key(source, prefix, str(key), list(known)))
    hints = get_type_hints(cls)
    values = {}
    for name, value in data.items():
        dotted = f"{prefix}.{name}" if prefix else name
        values[name] = _coerce(value, hints[name], dotted, source, known[name])
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str, source: str, spec: Any = None) -> Any:
    """`value` as type `hint`, or a ConfigError naming `key` and `source`."""
    coerced = _convert(value, hint, key, source)
    choices = spec.metadata.get("choices") if spec is not None else None
    if choices:
        for item in coerced if isinstance(coerced, list) else [coerced]:
            if item is not None and item not in choices:
                raise ConfigError(
                    f"{source}: {key}: {item!r} is not one of {', '.join(map(str, choices))}"
                )
    return coerced


def _convert(value: Any, hint: Any, key: str, source: str) -> Any:
    if hint is Any:
        return value
    if is_dataclass(hint) and isinstance(hint, type):
        return from_dict(hint, value, source=source, prefix=key)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except ConfigError:
                continue
        raise _type_error(value, hint, key, source)
    if origin is Literal:
        if value in get_args(hint):
            return value
        raise _type_error(value, hint, key, source)
    if origin is list:
        (item,) = get_args(hint) or (Any,)
        if not isinstance(value, list):  # a lone value stands for a list of one
            value = [value]
        return [_convert(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _type_error(value, hint, key, source)
        _, item = get_args(hint) or (str, Any)
        return {k: _convert(v, item, f"{key}.{k}", source) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-5 (no dot) as a string: YAML 1.1
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str and isinstance(value, str):
        return value
    raise _type_error(value, hint, key, source)


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(hint))
    if origin is list:
        return f"a list of {_type_name(get_args(hint)[0])}"
    if origin is dict:
        item = get_args(hint)[1] if get_args(hint) else Any
        return "a mapping" if item is Any else f"a mapping to {_type_name(item)}"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, get_args(hint)))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _type_error(value: Any, hint: Any, key: str, source: str) -> ConfigError:
    return ConfigError(
        f"{source}: {key}: expected {_type_name(hint)}, "
        f"got {_SHORT.repr(value)} ({type(value).__name__})"
    )


def _first_line(error: Exception | str) -> str:
    """The start of an error's message (PyYAML's run to many lines)."""
    lines = str(error).strip().splitlines()
    return " ".join(line.strip() for line in lines[:3]) if lines else "parse error"


def _unknown_key(source: str, prefix: str, key: str, valid: list[str]) -> str:
    dotted = f"{prefix}.{key}" if prefix else key
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?" if close else ""
    where = f"in {prefix!r}" if prefix else "at the top level"
    return f"{source}: unknown key {dotted!r}{hint} (valid {where}: {', '.join(valid)})"
