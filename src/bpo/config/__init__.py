"""Recipes: dataclass configs whose fields carry their help, read from YAML with dotted overrides.

A recipe is one YAML file with a section per concern (``model``, ``data``,
``lora``, ``train``); every key is a field of a dataclass below, with its
default and its help text next to it (the habit of TRL's config classes). The
same keys can be set on the command line as dotted overrides::

    bpo train --config recipes/tiny.yaml train.learning_rate=1e-5 lora.r=8

Unknown keys and values of the wrong type are refused loudly, naming the key and
the file (or the override) they came from, with the closest valid key when one
is near. Whatever the file holds (bytes that are not UTF-8, YAML that is not a
mapping, Python tags, anchors that expand to millions of values or contain
themselves), the outcome is a recipe or a `ConfigError`. The resolved recipe is
saved next to a run's outputs (`save_recipe`), so the run can be reproduced or
resumed from it.

Sections only hold settings; the stages read them. The package:

- `bpo.config.sections`: `doc` and the sections `bpo train` reads (model, data, lora, train);
- `bpo.config.run_sections`: those `bpo run` adds (samples, bootstrap, pairs, eval), `Recipe`;
- `bpo.config.loading`: `load_recipe`, overrides, type and key checks, size bounds;
- `bpo.config.checks`: value ranges, trackers, and `result_settings` (what shapes a result);
- here: saving, and describing every key (``bpo train --help-config``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import MISSING, asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from bpo.config.checks import check_recipe, check_report_to, result_settings
from bpo.config.loading import (
    MAX_DEPTH,
    MAX_VALUES,
    _type_name,
    apply_override,
    check_size,
    from_dict,
    load_recipe,
)
from bpo.config.run_sections import (
    BootstrapConfig,
    EvalConfig,
    PairsConfig,
    Recipe,
    RoundsConfig,
    SamplesConfig,
)
from bpo.config.sections import (
    LOSS_TYPES,
    TRL_LOSS_TYPES,
    DataConfig,
    LoraConfig,
    ModelConfig,
    TrainConfig,
    doc,
)
from bpo.fsio import write_text

__all__ = [
    "LOSS_TYPES",
    "MAX_DEPTH",
    "MAX_VALUES",
    "TRL_LOSS_TYPES",
    "BootstrapConfig",
    "DataConfig",
    "EvalConfig",
    "LoraConfig",
    "ModelConfig",
    "PairsConfig",
    "Recipe",
    "RoundsConfig",
    "SamplesConfig",
    "TrainConfig",
    "apply_override",
    "check_recipe",
    "check_report_to",
    "check_size",
    "describe",
    "describe_text",
    "doc",
    "from_dict",
    "load_recipe",
    "recipe_to_dict",
    "recipe_to_yaml",
    "result_settings",
    "save_recipe",
]


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data (what `save_recipe` writes)."""
    return asdict(recipe)


def recipe_to_yaml(recipe: Recipe) -> str:
    import yaml

    return str(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None))


def save_recipe(recipe: Recipe, path: str | os.PathLike[str]) -> Path:
    """Write the resolved recipe as YAML, atomically."""
    return write_text(path, recipe_to_yaml(recipe))


def describe(cls: type[Any] = Recipe, prefix: str = "") -> Iterator[tuple[str, str, Any, str]]:
    """Every key of `cls`: (dotted key, type, default, help), sections first to last."""
    hints = get_type_hints(cls)
    for spec in fields(cls):
        key = f"{prefix}.{spec.name}" if prefix else spec.name
        hint = hints[spec.name]
        if is_dataclass(hint) and isinstance(hint, type):
            yield from describe(hint, key)
            continue
        if spec.default is not MISSING:
            default = spec.default
        elif spec.default_factory is not MISSING:
            default = spec.default_factory()
        else:
            default = None
        help_text = spec.metadata.get("help", "")
        if not spec.metadata.get("result", True):
            help_text += " (Cannot change a result: may differ when a run is resumed.)"
        yield key, _type_name(hint), default, help_text


def describe_text(cls: type[Any] = Recipe) -> str:
    """The keys of `cls` as text, one block per key (for ``--help-config``)."""
    lines = []
    for key, type_name, default, help_text in describe(cls):
        lines.append(f"{key} ({type_name}, default: {default!r})\n    {help_text}")
    return "\n".join(lines)
