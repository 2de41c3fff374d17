"""Finding the files of a run directory, whichever stages it holds.

`bpo run` and `bpo demo` write::

    RUN_DIR/config.yaml                    the resolved recipe
    RUN_DIR/data/samples.jsonl, data/images/
    RUN_DIR/negatives/*.jsonl
    RUN_DIR/pairs.jsonl, pairs.stats.json
    RUN_DIR/train/metrics.jsonl
    RUN_DIR/eval/<name>/results.json, predictions.jsonl

Files are found by pattern, so a folder assembled by hand (or one stage's
output alone) works too; a folder with none of them is refused rather than
reported as an empty page (a mistyped path should not pass for an empty run).
Walking for ``metrics.jsonl`` and ``results.json`` goes at most `MAX_DEPTH`
folders down and skips image folders and checkpoints, which can hold hundreds
of thousands of files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpo.errors import ConfigError

MAX_DEPTH = 4
_SKIPPED_DIRS = ("images", "cache", "__pycache__", "node_modules")
_SKIPPED_PREFIXES = (".", "checkpoint-")


@dataclass
class RunFiles:
    """The files of one run directory (paths that exist; empty lists for absent stages)."""

    root: Path
    config: dict[str, Any] = field(default_factory=dict)
    config_path: Path | None = None
    samples: Path | None = None
    negatives: list[Path] = field(default_factory=list)
    pairs: Path | None = None
    pair_stats: Path | None = None
    metrics: list[Path] = field(default_factory=list)
    results: list[Path] = field(default_factory=list)
    image_roots: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Whether no stage left an output here (the recipe and image folders do not count)."""
        return not (self.samples or self.negatives or self.pairs or self.metrics or self.results)


def find_run_files(
    run_dir: str | os.PathLike[str], *, image_root: str | os.PathLike[str] | None = None
) -> RunFiles:
    """Locate the stages' files in `run_dir` (see the module docstring).

    Args:
        run_dir: the run directory.
        image_root: the folder image paths are relative to. Without it, the
            candidates are the recipe's ``data.image_root``, then ``data/images``,
            ``data`` and the run directory itself (the first that holds an image wins).

    Raises:
        ConfigError: `run_dir` is not a directory, holds no stage's output, or
            its config.yaml is not valid YAML.
    """
    from bpo.pairs import stats_path

    root = Path(run_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} is a file, not a run folder")
    if not root.is_dir():
        raise ConfigError(f"run folder not found: {root}")
    files = RunFiles(root=root)
    config_path = root / "config.yaml"
    if config_path.is_file():
        files.config_path = config_path
        files.config = _read_yaml(config_path)
    # `bpo run` records where its samples are (samples.path); else look by name.
    recorded = (files.config.get("samples") or {}).get("path") if files.config else None
    if recorded and Path(recorded).is_file():
        files.samples = Path(recorded)
    else:
        files.samples = _first_file(
            root, ["data/samples.jsonl", "samples.jsonl", "data/samples.json", "samples.json"]
        )
    files.negatives = _files(root, ["negatives/*.jsonl", "negatives.jsonl", "*negatives*.jsonl"])
    files.pairs = _first_file(root, ["pairs.jsonl", "pairs/pairs.jsonl", "*pairs*.jsonl"])
    if files.pairs is not None and stats_path(files.pairs).is_file():
        files.pair_stats = stats_path(files.pairs)
    found = _walk(root, {"metrics.jsonl", "results.json"})
    files.metrics = found["metrics.jsonl"]
    files.results = found["results.json"]
    files.image_roots = _image_roots(root, files.config, image_root)
    if files.empty:
        raise ConfigError(
            f"{root} is not a bpo run: no samples, negatives, pairs, training metrics or "
            "evaluation results in it (looked for data/samples.jsonl, negatives/*.jsonl, "
            "pairs.jsonl, train/metrics.jsonl, eval/*/results.json)"
        )
    return files


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the recipe ({error})") from None
    return data if isinstance(data, dict) else {}


def _files(root: Path, patterns: list[str]) -> list[Path]:
    """Files matching any of `patterns` (in pattern order, each sorted), without repeats."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            # Not the sidecars stages write next to an output (bootstrap's per-sample log).
            if path.is_file() and not path.name.endswith((".tmp", ".skipped.jsonl", ".log.jsonl")):
                found.setdefault(path, None)
    return list(found)


def _first_file(root: Path, patterns: list[str]) -> Path | None:
    files = _files(root, patterns)
    return files[0] if files else None


def _walk(root: Path, names: set[str]) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {name: [] for name in names}
    base_depth = len(root.parts)
    for folder, dirs, filenames in os.walk(root):
        depth = len(Path(folder).parts) - base_depth
        dirs[:] = sorted(
            name
            for name in dirs
            if depth < MAX_DEPTH
            and name not in _SKIPPED_DIRS
            and not name.startswith(_SKIPPED_PREFIXES)
        )
        for name in sorted(names & set(filenames)):
            found[name].append(Path(folder) / name)
    return found


def _image_roots(
    root: Path, config: dict[str, Any], image_root: str | os.PathLike[str] | None
) -> list[Path]:
    if image_root is not None:
        return [Path(image_root)]
    candidates: list[Path] = []
    data = config.get("data")
    configured = data.get("image_root") if isinstance(data, dict) else None
    if isinstance(configured, str) and configured:
        # A recipe's relative path is relative to where `bpo run` ran, often the
        # run's parent; try the run directory first.
        candidates += [root / configured, Path(configured)]
    candidates += [root / "data" / "images", root / "data", root]
    return [path for path in dict.fromkeys(candidates) if path.is_dir()]
