"""The stages as Python functions, with the settings and checks of the CLI.

    import bpo

    summary = bpo.bootstrap("samples.json", strategy="cooccurrence", out="neg.jsonl")
    stats = bpo.pairs("samples.json", ["neg.jsonl"], out="pairs.jsonl")
    result = bpo.train(config="recipes/tiny.yaml", overrides=["data.pairs=pairs.jsonl"])
    results = bpo.evaluate(bench="pope", data="pope/", model="runs/m", out="eval/m")
    page = bpo.report("runs/demo")
    run = bpo.run("recipes/tiny.yaml", overrides=[...], out="runs/t")

Each function takes the command's flags as keywords (``--num-negatives 2`` is
``num_negatives=2``, ``--no-progress`` is ``no_progress=True``), starts from the
same defaults, and calls the same code as the command (each command module's
``execute``), so a setting means the same thing in both and the same settings
checks apply: a rerun with other settings raises `bpo.errors.ConfigError` rather
than mixing outputs. They return the stage's result object instead of printing it.

``bpo.bootstrap``, ``bpo.pairs``, ``bpo.train`` and ``bpo.report`` are also the
packages that implement those stages (``bpo.train.runner`` ...): calling one
runs the stage (`callable_stage`), so both ``bpo.train(...)`` and
``from bpo.train.runner import train`` work. Nothing heavy is imported until a
stage is called, so ``import bpo`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import types
from collections.abc import Sequence
from typing import Any

PathLike = str | os.PathLike[str]


def _arguments(command: str, positionals: Sequence[Any], options: dict[str, Any]) -> Any:
    """The command's parsed flags: its defaults, the positionals, then `options` by name.

    Flags the command requires go through its parser (so their checks apply);
    every other keyword must name one of the command's flags.
    """
    from bpo.cli import COMMANDS

    module = importlib.import_module(COMMANDS[command][0])
    parser = argparse.ArgumentParser(prog=f"bpo {command}", add_help=False)
    module.add_arguments(parser)
    argv = [os.fspath(value) for value in positionals]
    for action in parser._actions:
        if action.required and action.option_strings:
            if action.dest not in options:
                raise TypeError(f"bpo.{command}() needs the keyword {action.dest!r}")
            argv += [action.option_strings[-1], os.fspath(options[action.dest])]
    args = parser.parse_args(argv)
    for key, value in options.items():
        if not hasattr(args, key):
            valid = ", ".join(sorted(k for k in vars(args) if not k.startswith("_")))
            raise TypeError(f"bpo.{command}() got an unknown keyword {key!r} (valid: {valid})")
        setattr(args, key, os.fspath(value) if isinstance(value, os.PathLike) else value)
    return module.execute(args)


def bootstrap(samples: PathLike, **options: Any) -> Any:
    """`bpo bootstrap`: rejected responses for each sample; returns the `BootstrapSummary`.

    Keywords: ``strategy`` and ``out`` (required), then any flag of ``bpo bootstrap``.
    """
    return _arguments("bootstrap", [samples], options)


def pairs(samples: PathLike, negatives: PathLike | Sequence[PathLike], **options: Any) -> Any:
    """`bpo pairs`: preference pairs from samples and negatives; returns the `PairStats`.

    Keywords: ``out`` (required), then any flag of ``bpo pairs`` (``export=["trl"]`` ...).
    """
    files = [negatives] if isinstance(negatives, (str, os.PathLike)) else list(negatives)
    return _arguments("pairs", [samples, *files], options)


def train(config: PathLike | None = None, overrides: Sequence[str] = (), **options: Any) -> Any:
    """`bpo train`: DPO from a recipe and ``KEY=VALUE`` overrides; returns the `TrainResult`.

    Keywords: any flag of ``bpo train`` (``output_dir``, ``resume``, ``overwrite`` ...).
    """
    options["config"] = None if config is None else os.fspath(config)
    return _arguments("train", list(overrides), options)


def evaluate(**options: Any) -> Any:
    """`bpo eval`: one benchmark; returns its results (as saved in ``OUT/results.json``).

    Keywords: ``bench`` and ``out``, then any flag of ``bpo eval`` (``data``, ``model`` ...).
    """
    return _arguments("eval", [], options)


def report(run_dir: PathLike, **options: Any) -> Any:
    """`bpo report`: the HTML page of a run folder; returns its path."""
    return _arguments("report", [run_dir], options)


def run(recipe: PathLike, overrides: Sequence[str] = (), **options: Any) -> Any:
    """`bpo run`: every stage of a recipe into ``out`` (required); returns the `Run`."""
    return _arguments("run", [recipe, *overrides], options)


class _StageModule(types.ModuleType):
    """A stage's package that runs the stage when called (see the module docstring)."""

    _bpo_stage: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return globals()[self._bpo_stage](*args, **kwargs)


def callable_stage(module_name: str, stage: str) -> None:
    """Make the module `module_name` call `bpo.api.<stage>` when called."""
    module = sys.modules[module_name]
    module.__class__ = _StageModule
    module._bpo_stage = stage  # type: ignore[attr-defined]
