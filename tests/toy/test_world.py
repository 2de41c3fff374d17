"""The toy world: statistics, disjoint splits, images that match their records, determinism."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bpo.data.formats import read_samples
from bpo.errors import ConfigError
from bpo.lexicon import ObjectLexicon
from bpo.toy.scenes import WorldSpec, caption, draw_scenes
from bpo.toy.world import SPLITS, ToyWorld, cooccurrence_rate, draw_world, world_sizes, write_world
from tests.toy.conftest import SMALL_WORLD


@pytest.fixture(scope="module")
def world(toy_world_dir: Path) -> ToyWorld:
    return ToyWorld.load(toy_world_dir)


def test_categories_are_coco_objects_the_lexicon_reads_back_from_captions(world: ToyWorld) -> None:
    lexicon = ObjectLexicon.default()
    assert all(name in lexicon for name in world.spec.names)
    for split in SPLITS:
        for sample in world.samples(split, task="caption"):
            assert lexicon.find(sample.response) == sample.meta["objects"]  # order kept too


def test_caption_lists_objects_in_order_with_articles() -> None:
    assert caption(["fork"]) == "A fork."
    assert caption(["fork", "knife", "apple"]) == "A fork, a knife and an apple."


def test_cooccurrence_is_strong_in_biased_splits_and_even_in_the_vision_split(
    world: ToyWorld,
) -> None:
    spec = world.spec
    corpus = [sorted(ObjectLexicon.default().objects(line)) for line in world.corpus()]
    assert len(corpus) == SMALL_WORLD["corpus"]
    # ~6000 anchors in the corpus: the binomial spread of the rate is about 0.003.
    assert cooccurrence_rate(spec, corpus) == pytest.approx(spec.cooccurrence, abs=0.015)
    for split in ("sft", "preference", "test"):
        assert world.statistics[split]["cooccurrence"] == pytest.approx(0.95, abs=0.05)
    vision = [s.meta["objects"] for s in world.samples("vision", task="caption")]
    assert cooccurrence_rate(spec, vision) == pytest.approx(0.5, abs=0.08)
    assert world.statistics["vision"]["cooccurrence"] == cooccurrence_rate(spec, vision)


def test_counterfactual_scenes_lack_the_partner_of_a_present_anchor(world: ToyWorld) -> None:
    anchor_of = {dependent: anchor for anchor, dependent in world.spec.pairs}
    for split in ("validation", "test"):
        samples = list(world.samples(split))
        counterfactual = [s for s in samples if s.meta["counterfactual"]]
        assert len(counterfactual) == len(samples) // 2 == getattr(world.sizes, split)
        missing = Counter(s.meta["absent_partner"] for s in counterfactual)
        assert set(missing) == set(world.spec.dependents)  # every pair gets its share
        assert max(missing.values()) - min(missing.values()) <= 1
        for sample in counterfactual:
            partner = sample.meta["absent_partner"]
            assert partner not in sample.meta["objects"]
            assert anchor_of[partner] in sample.meta["objects"]
            assert partner in sample.meta["absent_partners"]
        assert all(
            s.meta["absent_partner"] is None for s in samples if not s.meta["counterfactual"]
        )


def test_yes_no_answers_are_balanced(world: ToyWorld) -> None:
    for split in ("sft", "preference"):
        answers = Counter(s.response for s in world.samples(split, task="yesno"))
        assert set(answers) == {"Yes", "No"}
        assert answers["Yes"] == answers["No"] >= 0.9 * getattr(world.sizes, split)
    for split in ("validation", "test"):
        for subset in ("random", "counterfactual"):
            lines = world.pope_path(split, subset).read_text().splitlines()
            rows = [json.loads(line) for line in lines]
            labels = Counter(row["label"] for row in rows)
            assert labels["yes"] == labels["no"] >= 0.9 * getattr(world.sizes, split)
            assert [row["question_id"] for row in rows] == list(range(1, len(rows) + 1))
            assert all(row["text"] == f"Is there a {row['object']} in the image?" for row in rows)


def test_yes_no_records_answer_what_the_scene_holds(world: ToyWorld) -> None:
    for sample in world.samples("sft", task="yesno"):
        assert sample.response == (
            "Yes" if sample.meta["object"] in sample.meta["objects"] else "No"
        )
    rows = [json.loads(line) for line in world.pope_path("test").read_text().splitlines()]
    objects = {s.image: s.meta for s in world.samples("test")}
    for row in rows:
        meta = objects[row["image"]]
        assert row["label"] == ("yes" if row["object"] in meta["objects"] else "no")
        if row["label"] == "no":  # the counterfactual question is about the missing partner
            assert row["object"] == meta["absent_partner"]


def test_splits_are_disjoint_and_ids_unique(world: ToyWorld) -> None:
    world.check_disjoint()
    ids = [s.id for split in SPLITS for s in world.samples(split)]
    assert len(ids) == len(set(ids))
    images = {split: {s.image for s in world.samples(split)} for split in SPLITS}
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1 :]:
            assert not images[first] & images[second]


def test_disjointness_check_catches_a_repeated_image(toy_world_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(toy_world_dir, tmp_path / "world"))
    shutil.copyfile(copy / "images/test/test-00000.png", copy / "images/sft/sft-00003.png")
    with pytest.raises(ConfigError, match="sft-00003 repeats scene test-00000"):
        ToyWorld.load(copy).check_disjoint()


def test_images_show_exactly_the_objects_of_their_records(world: ToyWorld) -> None:
    spec = world.spec
    for split in ("test", "vision"):
        for sample in list(world.samples(split, task="caption"))[:60]:
            pixels = np.asarray(Image.open(world.root / (sample.image or "")).convert("RGB"))
            assert pixels.shape == (spec.image_size, spec.image_size, 3)
            colours = Counter(map(tuple, pixels.reshape(-1, 3).tolist()))
            for category in spec.categories:
                present = category.name in sample.meta["objects"]
                assert (colours[category.colour] > 0) == present, (sample.id, category.name)
            grey = [c for c in colours if c[0] == c[1] == c[2]]
            assert len(grey) == 1  # one background level; every other colour is an object's
            assert len(colours) == 1 + len(sample.meta["objects"])


def test_small_dependents_and_large_anchors(world: ToyWorld) -> None:
    spec = world.spec
    for scene in draw_scenes(spec, "test", 50, seed=3):
        for obj in scene.objects:
            width, height = obj.box[2:]
            if obj.category in spec.dependents:
                assert max(width, height) <= 7
            else:
                assert max(width, height) >= 8
            x, y = obj.box[:2]
            cell = spec.cell_size  # one object per cell: no box crosses a cell border
            assert x // cell == (x + width - 1) // cell and y // cell == (y + height - 1) // cell


def test_samples_read_with_the_project_reader(world: ToyWorld) -> None:
    samples = list(read_samples(world.samples_path("sft")))
    assert len(samples) == len(list(world.samples("sft")))
    assert {s.meta["task"] for s in samples} == {"caption", "yesno"}


def test_same_seed_same_world_other_seed_other_world(toy_world_dir: Path, tmp_path: Path) -> None:
    again = write_world(tmp_path / "again", seed=0, progress=False, **SMALL_WORLD)
    assert ToyWorld.load(again).fingerprint == ToyWorld.load(toy_world_dir).fingerprint
    assert (again / "test.jsonl").read_bytes() == (toy_world_dir / "test.jsonl").read_bytes()
    other = write_world(tmp_path / "other", seed=1, progress=False, **SMALL_WORLD)
    assert ToyWorld.load(other).fingerprint != ToyWorld.load(toy_world_dir).fingerprint


def test_a_complete_world_is_not_rewritten(toy_world_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(toy_world_dir, tmp_path / "world"))
    marker = copy / "test.jsonl"
    marker.write_text("kept\n")
    write_world(copy, seed=0, progress=False, **SMALL_WORLD)
    assert marker.read_text() == "kept\n"
    write_world(copy, seed=0, progress=False, **{**SMALL_WORLD, "test": 61})
    assert marker.read_text() != "kept\n"  # other parameters: written again


def test_test_scenes_do_not_depend_on_training_split_sizes() -> None:
    spec = WorldSpec()
    small = draw_world(0, spec, world_sizes(vision=10, sft=10, preference=10, test=20))
    large = draw_world(0, spec, world_sizes(vision=50, sft=40, preference=30, test=20))
    assert small["test"] == large["test"]
    assert small["validation"] == large["validation"]


def test_bad_sizes_and_specs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown toy world size"):
        write_world(tmp_path, sizes_typo=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="non-negative"):
        world_sizes(test=-1)
    with pytest.raises(ConfigError, match="pairs"):
        WorldSpec(pairs=(("fork", "giraffe"),))
    with pytest.raises(ConfigError, match="no toy world"):
        ToyWorld.load(tmp_path)
