"""The toy world written to disk as an ordinary dataset, and read back.

`write_world(out_dir, seed=...)` draws every split (see `bpo.toy.scenes` for
the scenes themselves) and writes::

    out_dir/
      images/<split>/<scene id>.png      48x48 RGB scenes
      vision.jsonl                       balanced scenes (caption samples), for the vision encoder
      corpus.txt                         text only: one gold caption of a biased scene per line
      sft.jsonl                          biased scenes: caption + two yes/no samples each
      preference.jsonl                   biased scenes: caption + two yes/no samples each
      validation.jsonl, test.jsonl       caption samples of normal then counterfactual scenes
      <split>_pope_random.jsonl          POPE questions on the normal scenes of validation/test
      <split>_pope_counterfactual.jsonl  POPE questions on the counterfactual scenes
      world.json                         seed, parameters, statistics, file digests (written last)

Samples are `bpo.data.records.Sample` JSONL; image paths are relative to
`out_dir`, which is the image root. Each sample's ``meta`` holds ``objects``
(the categories present, for CHAIR), ``counterfactual``, ``absent_partner``
(the dependent a counterfactual scene lacks), ``absent_partners`` (every
dependent absent beside its anchor), ``task`` (``caption`` or ``yesno``),
``object`` (of a yes/no question), ``scene`` and ``split``. POPE lines are
``{"question_id", "image", "text", "label": "yes"|"no", "scene", "object"}``
as in POPE's own files (plus the last two).

Splits are disjoint: no scene layout is drawn twice over the whole world, in
the order test, validation, preference, sft, vision (a later repeat is redrawn),
and `ToyWorld.check_disjoint` verifies it from the files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from bpo.console import hide_bar
from bpo.data.jsonl import JsonlWriter, iter_jsonl
from bpo.data.records import Sample
from bpo.errors import ConfigError
from bpo.fsio import write_text
from bpo.toy.scenes import (
    Scene,
    WorldSpec,
    caption,
    draw_object_set,
    draw_scenes,
    pope_questions,
    random_stream,
    render,
    scene_samples,
)

WORLD_FORMAT = "bpo-toy-world"
WORLD_VERSION = 1
WORLD_FILE = "world.json"
CORPUS_FILE = "corpus.txt"
# Drawn in this order; a later split's scene that repeats an earlier one is redrawn,
# so the test scenes never depend on the sizes of the training splits.
SPLITS = ("test", "validation", "preference", "sft", "vision")
EVAL_SPLITS = ("test", "validation")
POPE_SUBSETS = ("random", "counterfactual")
_WITH_QUESTIONS = ("sft", "preference")


@dataclass(frozen=True)
class WorldSizes:
    """How many scenes (or captions) each split holds.

    Attributes:
        vision: balanced scenes for the vision encoder.
        corpus: text-only captions for the language model.
        sft: biased scenes for visual instruction tuning (a caption and two yes/no each).
        preference: biased scenes for bootstrapping and pairs (study 2: 3000).
        validation: normal scenes, and as many counterfactual ones, for tuning choices.
        test: normal scenes, and as many counterfactual ones, for evaluation.
    """

    vision: int = 3000
    corpus: int = 50000
    sft: int = 3000
    preference: int = 3000
    validation: int = 200
    test: int = 300


def world_sizes(**overrides: int) -> WorldSizes:
    """`WorldSizes` with `overrides`; unknown names or negative counts raise `ConfigError`."""
    valid = {item.name for item in fields(WorldSizes)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"unknown toy world size {unknown}; valid: {', '.join(sorted(valid))}")
    for name, value in overrides.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(
                f"toy world size {name} must be a non-negative integer, got {value!r}"
            )
    return replace(WorldSizes(), **overrides)


def _parameters(seed: int, spec: WorldSpec, sizes: WorldSizes) -> dict[str, Any]:
    """What defines a world, in its JSON form (tuples as lists) so it compares with a file."""
    parameters = {
        "format": WORLD_FORMAT,
        "version": WORLD_VERSION,
        "seed": seed,
        "spec": spec.to_dict(),
        "sizes": asdict(sizes),
    }
    return dict(json.loads(json.dumps(parameters)))


def draw_world(seed: int, spec: WorldSpec, sizes: WorldSizes) -> dict[str, list[Scene]]:
    """Every split's scenes, disjoint over the whole world (see the module docstring)."""
    seen: set[tuple[Any, ...]] = set()
    scenes: dict[str, list[Scene]] = {}
    for split in SPLITS:
        count = getattr(sizes, split)
        if split in EVAL_SPLITS:
            normal = draw_scenes(spec, split, count, seed=seed, kind="biased", seen=seen)
            scenes[split] = normal + draw_scenes(
                spec, split, count, seed=seed, kind="counterfactual", seen=seen, start=count
            )
        else:
            kind = "balanced" if split == "vision" else "biased"
            scenes[split] = draw_scenes(spec, split, count, seed=seed, kind=kind, seen=seen)
    return scenes


def corpus_captions(seed: int, spec: WorldSpec, count: int) -> list[str]:
    """Gold captions of `count` biased scenes (object sets only: no image is drawn)."""
    rng = random_stream(seed, "corpus")
    captions = []
    for _ in range(count):
        present = draw_object_set(spec, rng, "biased")
        captions.append(caption([name for name in spec.names if name in present]))
    return captions


def cooccurrence_rate(spec: WorldSpec, object_sets: list[list[str]]) -> float:
    """P(dependent present | anchor present), pooled over the pairs (NaN without anchors)."""
    anchored = together = 0
    for present in object_sets:
        for anchor, dependent in spec.pairs:
            if anchor in present:
                anchored += 1
                together += dependent in present
    return together / anchored if anchored else float("nan")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_world(
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    spec: WorldSpec | None = None,
    progress: bool = True,
    **sizes: int,
) -> Path:
    """Draw the toy world and write it to `out_dir` (see the module docstring for the files).

    A folder that already holds a complete world with the same seed, spec and
    sizes is left as it is (``world.json`` is written last, so a crash mid-way
    means a rewrite), which lets a pipeline resume.

    Args:
        out_dir: the folder to write; it becomes the image root of the records.
        seed: the world seed: the same seed gives the same files.
        spec: the world's categories and statistics (default: `WorldSpec()`).
        progress: show a progress bar while drawing images.
        **sizes: overrides of `WorldSizes` fields, e.g. ``test=50``.

    Returns:
        `out_dir` as a `Path`.

    Raises:
        ConfigError: an unknown size, or `out_dir` exists and is not a folder.
    """
    from tqdm.auto import tqdm

    spec = spec if spec is not None else WorldSpec()
    counts = world_sizes(**sizes)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"toy world output {root} exists and is not a folder")
    parameters = _parameters(seed, spec, counts)
    marker = root / WORLD_FILE
    if marker.exists():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = {}
        if previous.get("parameters") == parameters:
            return root
        marker.unlink()

    scenes = draw_world(seed, spec, counts)
    # Pixels, not PNG bytes: another zlib may compress the same image differently.
    image_digest = hashlib.sha256()
    total = sum(len(split_scenes) for split_scenes in scenes.values())
    with tqdm(total=total, desc="toy world", unit="scene", disable=hide_bar(progress)) as bar:
        for split, split_scenes in scenes.items():
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            for scene in split_scenes:
                image = render(spec, scene)
                image.save(root / scene.image_path, format="PNG")
                image_digest.update(scene.image_path.encode() + image.tobytes())
                bar.update()

    files: dict[str, str] = {}
    statistics: dict[str, Any] = {}
    for split, split_scenes in scenes.items():
        rng = random_stream(seed, f"{split}/questions")
        path = root / f"{split}.jsonl"
        with JsonlWriter(path, resume=False) as writer:
            for scene in split_scenes:
                for sample in scene_samples(spec, scene, rng, questions=split in _WITH_QUESTIONS):
                    writer.write(vars(sample))  # the record's fields, without asdict's deep copy
        files[path.name] = _digest(path)
        normal = [list(scene.names) for scene in split_scenes if not scene.counterfactual]
        statistics[split] = {
            "scenes": len(split_scenes),
            "counterfactual": sum(scene.counterfactual for scene in split_scenes),
            "cooccurrence": cooccurrence_rate(spec, normal),
        }
        if split in EVAL_SPLITS:
            for subset in POPE_SUBSETS:
                chosen = [s for s in split_scenes if s.counterfactual == (subset != "random")]
                rows = pope_questions(spec, chosen, random_stream(seed, f"{split}/pope/{subset}"))
                path = root / f"{split}_pope_{subset}.jsonl"
                path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
                files[path.name] = _digest(path)

    corpus = corpus_captions(seed, spec, counts.corpus)
    corpus_path = root / CORPUS_FILE
    corpus_path.write_text("".join(line + "\n" for line in corpus), encoding="utf-8")
    files[CORPUS_FILE] = _digest(corpus_path)
    files["images"] = image_digest.hexdigest()

    payload = {"parameters": parameters, "statistics": statistics, "files": files}
    write_text(marker, json.dumps(payload, indent=2) + "\n")  # last: the world is complete
    return root


@dataclass(frozen=True)
class ToyWorld:
    """A toy world on disk, as `write_world` left it.

    Attributes:
        root: the world folder (the image root of its records).
        seed: the world seed.
        spec: categories and statistics.
        sizes: split sizes.
        fingerprint: SHA-256 of ``world.json``, which holds the digest of every
            file: two worlds with the same fingerprint hold the same data.
        statistics: per split: scene count, counterfactual count, co-occurrence rate.
    """

    root: Path
    seed: int
    spec: WorldSpec
    sizes: WorldSizes
    fingerprint: str
    statistics: dict[str, Any]

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> ToyWorld:
        """Read ``world.json``.

        Raises:
            ConfigError: no complete world in `root`.
        """
        marker = Path(root) / WORLD_FILE
        try:
            raw = marker.read_bytes()
            data = json.loads(raw)
            parameters = data["parameters"]
            if parameters.get("format") != WORLD_FORMAT:
                raise ValueError(f"format is not {WORLD_FORMAT!r}")
            return cls(
                root=Path(root),
                seed=int(parameters["seed"]),
                spec=WorldSpec.from_dict(parameters["spec"]),
                sizes=WorldSizes(**parameters["sizes"]),
                fingerprint=hashlib.sha256(raw).hexdigest(),
                statistics=data["statistics"],
            )
        except FileNotFoundError:
            raise ConfigError(f"no toy world in {root} (missing {WORLD_FILE})") from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{marker}: not a toy world file ({error})") from None

    def samples_path(self, split: str) -> Path:
        """The `Sample` JSONL of `split`."""
        if split not in SPLITS:
            raise ConfigError(f"unknown toy split {split!r}; valid: {', '.join(SPLITS)}")
        return self.root / f"{split}.jsonl"

    def pope_path(self, split: str, subset: str = "counterfactual") -> Path:
        """The POPE question file of an evaluation split (``random`` or ``counterfactual``)."""
        if split not in EVAL_SPLITS or subset not in POPE_SUBSETS:
            raise ConfigError(
                f"no POPE file for {split!r}/{subset!r}; splits: {', '.join(EVAL_SPLITS)},"
                f" subsets: {', '.join(POPE_SUBSETS)}"
            )
        return self.root / f"{split}_pope_{subset}.jsonl"

    @property
    def corpus_path(self) -> Path:
        return self.root / CORPUS_FILE

    def samples(self, split: str, *, task: str | None = None) -> Iterator[Sample]:
        """The samples of `split`, optionally only one task (``caption`` or ``yesno``)."""
        path = self.samples_path(split)
        for _, value in iter_jsonl(path):
            sample = Sample.from_dict(value)
            if task is None or sample.meta.get("task") == task:
                yield sample

    def corpus(self) -> list[str]:
        """The text-only caption corpus, one caption per item."""
        return self.corpus_path.read_text(encoding="utf-8").splitlines()

    def check_disjoint(self) -> None:
        """Verify from the files that no image is shared between splits or scenes.

        Compares the decoded pixels of every image, so it also catches two scenes
        drawn identically under different ids.

        Raises:
            ConfigError: two scenes with identical pixels, naming both.
        """
        from PIL import Image

        owner: dict[bytes, str] = {}
        for split in SPLITS:
            for sample in self.samples(split, task="caption"):
                assert sample.image is not None
                with Image.open(self.root / sample.image) as image:
                    key = hashlib.blake2b(image.convert("RGB").tobytes(), digest_size=16).digest()
                if key in owner:
                    raise ConfigError(f"scene {sample.id} repeats scene {owner[key]}")
                owner[key] = sample.id
