"""A negative's provenance as one compact line: ``model: x · distortion: diffusion · step: 500 · seed: 0``.

A negative's ``params`` record the settings that made it (DESIGN.md: provenance
travels with the record): the model, the distortion as `bpo.distort.describe`
writes it (``{"kind", "params", "seed"}``), sampling settings, the injector's
edits. A card shows them as ``key: value`` items, not as JSON, so that a reader
can scan what differs between two cards:

- the model, then the distortion, come first, the rest in the record's order;
- a nested object's entries are items of their own (``distortion: diffusion ·
  step: 500 · seed: 0``); one whose name a top-level key also has is said once,
  where it first comes, if they hold the same value, and under its parent's
  name otherwise (``distortion seed: 3``);
- lists are joined with commas, ``{"from", "to"}`` objects read ``cat → dog``, other
  objects in lists ``key=value``;
- empty values (null, "", [], {}) are left out: there is nothing to say about them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from bpo.report.html import escape, truncate

FIRST = ("model", "distortion")
SEPARATOR = " · "


def provenance_items(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``(key, value)`` items of a negative's params, in display order (see the module)."""
    keys = [key for key in FIRST if key in params]
    keys += [key for key in params if key not in FIRST]
    items: list[tuple[str, str]] = []
    for key in keys:
        for item in _items(str(key), params[key], params):
            # A top-level key's value, said already by a nested entry of that name.
            if item[0] in params and item in items:
                continue
            items.append(item)
    return items


def provenance_line(params: Mapping[str, Any], limit: int) -> str:
    """The items as HTML, ``key: value`` joined by " · ", escaped and cut to `limit` characters."""
    text = truncate(
        SEPARATOR.join(f"{key}: {value}" for key, value in provenance_items(params)), limit
    )
    return escape(text)


def _items(key: str, value: Any, top: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    if _empty(value):
        return
    if not isinstance(value, Mapping):
        yield key, _text(value)
        return
    # `bpo.distort.describe`'s {"kind", "params", "seed"}: the kind names the entry.
    nested = dict(value)
    if isinstance(nested.get("kind"), str):
        yield key, nested.pop("kind")
        inner = nested.pop("params", None)
        if isinstance(inner, Mapping):
            nested = {**inner, **nested}
    for name, entry in nested.items():
        name = str(name)
        if name in top and _text(top[name]) != _text(entry):
            name = f"{key} {name}"
        yield from _items(name, entry, {})


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, tuple, dict)) and not value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        if set(value) == {"from", "to"}:
            return f"{_text(value['from'])} → {_text(value['to'])}"
        return " ".join(f"{k}={_text(v)}" for k, v in value.items() if not _empty(v))
    if isinstance(value, (list, tuple)):
        separator = "; " if any(isinstance(v, Mapping) for v in value) else ", "
        return separator.join(_text(v) for v in value if not _empty(v))
    return str(value)
