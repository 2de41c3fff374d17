"""Toy scenes: categories, co-occurrence statistics, drawing, captions and questions.

Scenes are 48x48 images drawn with PIL. Eight object categories, each a
distinct shape and colour, named by COCO categories so that the project's
object lexicon, CHAIR and the co-occurrence injector read toy captions
unchanged. Three anchor -> dependent pairs (fork -> knife, keyboard -> mouse,
cup -> spoon) co-occur: a dependent is present with 95% of its anchors, and
(by default) never without it. Dependents are small (4-6 px) and of low contrast,
the anchors and the two independent objects large and vivid. This is the
regime of the second design study of issue 6: the vision encoder can see a
dependent, but a language model that learned "fork, a knife" from text will
say it whether or not it is there.

The splits and how they are written to disk: `bpo.toy.world`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from bpo.data.records import Sample
from bpo.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

CAPTION_PROMPT = "Describe the image."
QUESTION_TEMPLATE = "Is there a {object} in the image?"
ANSWERS = {True: "Yes", False: "No"}
SHAPES = ("triangle", "rectangle", "disc", "square", "ring", "bar", "diamond", "plus")

SCENE_KINDS = ("biased", "counterfactual", "balanced")


@dataclass(frozen=True)
class Category:
    """One object category: its COCO name and how it is drawn.

    Attributes:
        name: the COCO category name (a category of `ObjectLexicon.default()`).
        shape: one of `SHAPES`.
        colour: RGB fill colour.
        size: smallest and largest side in pixels (drawn uniformly).
    """

    name: str
    shape: str
    colour: tuple[int, int, int]
    size: tuple[int, int]


# Anchors and the independent objects: large, saturated. Dependents: 4-6 px and a
# tint of about +30 on one channel over a mid-grey background, so that they are
# visible to a trained encoder but weak (study 2 of issue 6: "dependents small
# (4-6 px) and low-contrast").
DEFAULT_CATEGORIES = (
    Category("fork", "triangle", (220, 60, 50), (9, 12)),
    Category("knife", "bar", (150, 116, 112), (5, 7)),
    Category("keyboard", "rectangle", (50, 90, 210), (9, 12)),
    Category("mouse", "diamond", (112, 146, 116), (4, 6)),
    Category("cup", "disc", (60, 170, 70), (9, 12)),
    Category("spoon", "plus", (114, 116, 152), (5, 6)),
    Category("book", "square", (230, 200, 40), (8, 11)),
    Category("clock", "ring", (160, 60, 180), (9, 12)),
)
DEFAULT_PAIRS = (("fork", "knife"), ("keyboard", "mouse"), ("cup", "spoon"))


@dataclass(frozen=True)
class WorldSpec:
    """What the world looks like and how often things go together.

    Attributes:
        categories: the object categories; captions list objects in this order.
        pairs: ``(anchor, dependent)`` pairs.
        image_size: side of the square scenes, in pixels.
        cell_size: scenes are a grid of square cells holding one object each, at a
            random offset. The default, 12 px, is the base model's CLIP patch: each
            patch then shows at most one object, so the encoder's job is to recognise
            objects, as CLIP's is on photos. (With free placement a small object often
            shared a patch with a large one, and a pretrained encoder missed 37% of
            those: then no training can ground it.)
        background: mid-grey level of the background.
        background_jitter: the background level varies by up to this much per scene.
        anchor_probability: P(anchor present) in biased scenes.
        cooccurrence: P(dependent present | anchor present) in biased scenes (study 2: 0.95).
        lone_dependent: P(dependent present | anchor absent) in biased scenes. 0 by
            default: a dependent is only seen beside its anchor, so the only scenes that
            contradict the prior are the 5% where an anchor is alone. (At 0.05, lone
            dependents taught the tiny model to read dependents within the visual
            instruction tuning itself, at seed-dependent times: bases then ranged from
            0.33 to 1.0 in counterfactual absent-partner rate. At 0, seeds 0 and 1 gave
            0.68 and 0.76 on the validation split after 600 steps, study 2's regime.)
        other_probability: P(present) of each object in no pair, in biased scenes.
        balanced_probability: P(present) of every object, independently, in the vision split.
    """

    categories: tuple[Category, ...] = DEFAULT_CATEGORIES
    pairs: tuple[tuple[str, str], ...] = DEFAULT_PAIRS
    image_size: int = 48
    cell_size: int = 12
    background: int = 118
    background_jitter: int = 6
    anchor_probability: float = 0.5
    cooccurrence: float = 0.95
    lone_dependent: float = 0.0
    other_probability: float = 0.5
    balanced_probability: float = 0.5

    def __post_init__(self) -> None:
        names = [category.name for category in self.categories]
        if len(set(names)) != len(names):
            raise ConfigError(f"toy world: category names repeat: {names}")
        for category in self.categories:
            if category.shape not in SHAPES:
                raise ConfigError(
                    f"toy world: unknown shape {category.shape!r}; valid: {', '.join(SHAPES)}"
                )
            low, high = category.size
            if not 2 <= low <= high <= self.cell_size:
                raise ConfigError(f"toy world: bad size {category.size} for {category.name}")
        if self.image_size % self.cell_size or (self.image_size // self.cell_size) ** 2 < len(
            names
        ):
            raise ConfigError(
                f"toy world: image_size {self.image_size} must be a multiple of cell_size"
                f" {self.cell_size} with a cell for every category"
            )
        in_pairs = [name for pair in self.pairs for name in pair]
        if len(set(in_pairs)) != len(in_pairs) or not set(in_pairs) <= set(names):
            raise ConfigError(f"toy world: pairs must use distinct known categories: {self.pairs}")

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        """The category names, in caption order."""
        return tuple(category.name for category in self.categories)

    @property
    def partner(self) -> dict[str, str]:
        """anchor -> dependent."""
        return dict(self.pairs)

    @property
    def dependents(self) -> tuple[str, ...]:
        return tuple(dependent for _, dependent in self.pairs)

    @property
    def others(self) -> tuple[str, ...]:
        """The categories in no pair."""
        paired = {name for pair in self.pairs for name in pair}
        return tuple(name for name in self.names if name not in paired)

    def category(self, name: str) -> Category:
        return next(category for category in self.categories if category.name == name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldSpec:
        values = dict(data)
        values["categories"] = tuple(
            Category(c["name"], c["shape"], tuple(c["colour"]), tuple(c["size"]))
            for c in data["categories"]
        )
        values["pairs"] = tuple(tuple(pair) for pair in data["pairs"])
        return cls(**values)


def random_stream(seed: int, name: str) -> np.random.Generator:
    """A random generator for one named stream of one seed.

    Each split (and each use within it) draws from its own stream, so changing
    the size of one split never changes the scenes of another.
    """
    import numpy as np

    key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng([seed, key])


# --- scenes --------------------------------------------------------------------------


@dataclass(frozen=True)
class PlacedObject:
    """An object drawn in a scene: its category and bounding box ``(x, y, width, height)``."""

    category: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Scene:
    """One scene: what is in it, where, and how it was drawn.

    Attributes:
        id: ``<split>-<index>``, unique over the world.
        split: the split it belongs to.
        objects: the placed objects, in caption order.
        background: the background grey level.
        counterfactual: an anchor was forced present and its dependent absent.
        missing_partner: in a counterfactual scene, that dependent.
        absent_partners: dependents absent while their anchor is present (the
            co-occurrence errors a biased model would make), in caption order.
    """

    id: str
    split: str
    objects: tuple[PlacedObject, ...]
    background: int
    counterfactual: bool = False
    missing_partner: str | None = None
    absent_partners: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(obj.category for obj in self.objects)

    @property
    def layout_key(self) -> tuple[Any, ...]:
        """What makes two scenes the same image."""
        return (self.background, tuple((obj.category, obj.box) for obj in self.objects))

    @property
    def image_path(self) -> str:
        """The image path relative to the world folder (the image root)."""
        return f"images/{self.split}/{self.id}.png"


def draw_object_set(
    spec: WorldSpec, rng: np.random.Generator, kind: str, forced_pair: int = 0
) -> set[str]:
    """The categories present in one scene of `kind`: balanced, biased or counterfactual.

    A counterfactual scene is a biased one with anchor ``pairs[forced_pair]``
    made present and its dependent absent. Empty sets are redrawn.
    """
    while True:
        present: set[str] = set()
        if kind == "balanced":
            present = {n for n in spec.names if rng.random() < spec.balanced_probability}
        else:
            for anchor, dependent in spec.pairs:
                if rng.random() < spec.anchor_probability:
                    present.add(anchor)
                    if rng.random() < spec.cooccurrence:
                        present.add(dependent)
                elif rng.random() < spec.lone_dependent:
                    present.add(dependent)
            present |= {n for n in spec.others if rng.random() < spec.other_probability}
            if kind == "counterfactual":
                anchor, dependent = spec.pairs[forced_pair % len(spec.pairs)]
                present = (present | {anchor}) - {dependent}
        if present:
            return present


def _box_size(category: Category, rng: np.random.Generator) -> tuple[int, int]:
    side = int(rng.integers(category.size[0], category.size[1] + 1))
    if category.shape == "rectangle":
        return side, max(3, round(0.6 * side))
    if category.shape == "bar":
        return side, 2
    return side, side


def _place(
    spec: WorldSpec, names: Iterable[str], rng: np.random.Generator
) -> tuple[PlacedObject, ...]:
    """One object per grid cell, in random cells, at a random offset inside its cell."""
    per_row = spec.image_size // spec.cell_size
    chosen = sorted(names, key=spec.names.index)
    cells = rng.permutation(per_row * per_row)[: len(chosen)]
    objects = []
    for name, cell in zip(chosen, cells, strict=True):
        width, height = _box_size(spec.category(name), rng)
        x = int(cell % per_row) * spec.cell_size + int(rng.integers(spec.cell_size - width + 1))
        y = int(cell // per_row) * spec.cell_size + int(rng.integers(spec.cell_size - height + 1))
        objects.append(PlacedObject(name, (x, y, width, height)))
    return tuple(objects)


def draw_scenes(
    spec: WorldSpec,
    split: str,
    count: int,
    *,
    seed: int,
    kind: str = "biased",
    seen: set[tuple[Any, ...]] | None = None,
    start: int = 0,
) -> list[Scene]:
    """Draw `count` scenes of one kind for `split`.

    Args:
        spec: the world.
        split: the split name (part of each scene id).
        count: how many scenes.
        seed: the world seed; each (split, kind) pair draws from its own stream.
        kind: ``"biased"``, ``"counterfactual"`` (the forced pair cycles over the
            pairs, so each pair gets a third) or ``"balanced"``.
        seen: layout keys of scenes drawn so far; a scene already there is
            redrawn, and each new one is added (this keeps every split disjoint).
        start: the index of the first scene id.
    """
    if kind not in SCENE_KINDS:
        raise ConfigError(f"unknown scene kind {kind!r}; valid: {', '.join(SCENE_KINDS)}")
    rng = random_stream(seed, f"{split}/{kind}")
    seen = set() if seen is None else seen
    partner = spec.partner
    scenes = []
    for index in range(start, start + count):
        while True:
            objects = _place(spec, draw_object_set(spec, rng, kind, index), rng)
            background = spec.background + int(
                rng.integers(-spec.background_jitter, spec.background_jitter + 1)
            )
            present = {obj.category for obj in objects}
            absent_partners = tuple(
                partner[name]
                for name in spec.names
                if name in partner and partner[name] not in present
            )
            scene = Scene(
                f"{split}-{index:05d}",
                split,
                objects,
                background,
                counterfactual=kind == "counterfactual",
                missing_partner=spec.pairs[index % len(spec.pairs)][1]
                if kind == "counterfactual"
                else None,
                absent_partners=absent_partners,
            )
            if scene.layout_key not in seen:
                seen.add(scene.layout_key)
                scenes.append(scene)
                break
    return scenes


def render(spec: WorldSpec, scene: Scene) -> Image.Image:
    """Draw a scene as an RGB image (no anti-aliasing: every object pixel has its exact colour)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (spec.image_size, spec.image_size), (scene.background,) * 3)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        category = spec.category(obj.category)
        x, y, w, h = obj.box
        right, bottom = x + w - 1, y + h - 1
        fill = category.colour
        if category.shape == "triangle":
            draw.polygon([(x + (w - 1) / 2, y), (x, bottom), (right, bottom)], fill=fill)
        elif category.shape in ("rectangle", "square", "bar"):
            draw.rectangle([x, y, right, bottom], fill=fill)
        elif category.shape == "disc":
            draw.ellipse([x, y, right, bottom], fill=fill)
        elif category.shape == "ring":
            draw.ellipse([x, y, right, bottom], outline=fill, width=max(2, w // 4))
        elif category.shape == "diamond":
            cx, cy = x + (w - 1) / 2, y + (h - 1) / 2
            draw.polygon([(cx, y), (right, cy), (cx, bottom), (x, cy)], fill=fill)
        elif category.shape == "plus":
            arm = max(1, w // 3)
            middle_x, middle_y = x + (w - arm) // 2, y + (h - arm) // 2
            draw.rectangle([middle_x, y, middle_x + arm - 1, bottom], fill=fill)
            draw.rectangle([x, middle_y, right, middle_y + arm - 1], fill=fill)
    return image


# --- text ------------------------------------------------------------------------------


def caption(names: Sequence[str]) -> str:
    """The gold caption: the objects in the given order, e.g. "A fork, a knife and a cup."."""
    items = [f"{'an' if name[0] in 'aeiou' else 'a'} {name}" for name in names]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return listed[0].upper() + listed[1:] + "."


def question(name: str) -> str:
    """The yes/no question about one object."""
    return QUESTION_TEMPLATE.format(object=name)


def _meta(scene: Scene, **extra: Any) -> dict[str, Any]:
    return {
        "scene": scene.id,
        "split": scene.split,
        "objects": list(scene.names),
        "counterfactual": scene.counterfactual,
        "absent_partner": scene.missing_partner,
        "absent_partners": list(scene.absent_partners),
        **extra,
    }


def _probed_objects(
    spec: WorldSpec, scene: Scene, rng: np.random.Generator
) -> tuple[str, str] | None:
    """One present object and one absent object to ask about, so answers are balanced.

    In a counterfactual scene the absent object asked about is the missing
    partner, the question a biased model gets wrong (POPE's "adversarial"
    setting). None for a scene that holds every object (nothing to answer "no").
    """
    present = list(scene.names)
    absent = [name for name in spec.names if name not in present]
    if not absent:
        return None
    yes = present[int(rng.integers(len(present)))]
    if scene.missing_partner is not None:
        return yes, scene.missing_partner
    return yes, absent[int(rng.integers(len(absent)))]


def scene_samples(
    spec: WorldSpec, scene: Scene, rng: np.random.Generator, *, questions: bool
) -> list[Sample]:
    """The caption sample of a scene, and with `questions` its two yes/no samples.

    A scene that holds every object gets no yes/no samples (so answers stay balanced).
    """
    samples = [
        Sample(
            id=scene.id,
            image=scene.image_path,
            prompt=[{"role": "user", "content": CAPTION_PROMPT}],
            response=caption(scene.names),
            meta=_meta(scene, task="caption"),
        )
    ]
    probed = _probed_objects(spec, scene, rng) if questions else None
    if probed is not None:
        for name, answer in zip(probed, (True, False), strict=True):
            samples.append(
                Sample(
                    id=f"{scene.id}-{'yes' if answer else 'no'}",
                    image=scene.image_path,
                    prompt=[{"role": "user", "content": question(name)}],
                    response=ANSWERS[answer],
                    meta=_meta(scene, task="yesno", object=name),
                )
            )
    return samples


def pope_questions(
    spec: WorldSpec, scenes: Sequence[Scene], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """POPE-style questions: per scene one about a present object, one about an absent one.

    A scene that holds every object gets none (so answers stay balanced).
    """
    rows: list[dict[str, Any]] = []
    for scene in scenes:
        probed = _probed_objects(spec, scene, rng)
        if probed is None:
            continue
        for name, answer in zip(probed, (True, False), strict=True):
            rows.append(
                {
                    "question_id": len(rows) + 1,
                    "image": scene.image_path,
                    "text": question(name),
                    "label": "yes" if answer else "no",
                    "scene": scene.id,
                    "object": name,
                }
            )
    return rows
