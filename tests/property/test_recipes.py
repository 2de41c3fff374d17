"""Recipes and lexicon files under hostile input: unknown keys, wrong types, non-mapping
YAML, YAML alias bombs, self-referencing anchors, deep nesting, binary garbage. The
outcome is a recipe (that saves and loads back equal) or a `ConfigError`."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bpo.config import Recipe, describe, load_recipe, recipe_to_dict, save_recipe
from bpo.errors import ConfigError
from bpo.lexicon import ObjectLexicon
from tests.property import examples
from tests.property.strategies import either, json_values

KEYS = [key for key, *_ in describe(Recipe)]
SECTIONS = sorted({key.split(".")[0] for key in KEYS})
# Values of the types recipe keys take, and of types they do not.
values = st.one_of(
    st.sampled_from([1, 0, -3, 2.5, "1e-5", True, None, "sigmoid", "hf", "raise", [], {}]),
    st.lists(st.sampled_from(["q_proj", "rpo", 1]), max_size=3),
    st.dictionaries(st.sampled_from(["a", "image-weakening"]), st.sampled_from([1, "x"])),
    json_values,
)
sections = st.dictionaries(
    st.sampled_from(SECTIONS) | st.text(max_size=6),
    either(
        st.dictionaries(
            st.sampled_from(sorted({key.split(".")[1] for key in KEYS})) | st.text(max_size=6),
            values,
            max_size=4,
        )
    ),
    max_size=4,
)


def load_or_refuse(folder: Path, content: bytes, overrides: tuple[str, ...] = ()) -> Recipe | None:
    path = folder / "recipe.yaml"
    path.write_bytes(content)
    try:
        recipe = load_recipe(path, overrides)
    except ConfigError:
        return None
    saved = save_recipe(recipe, folder / "saved.yaml")
    assert recipe_to_dict(load_recipe(saved)) == recipe_to_dict(recipe)
    return recipe


@examples(150)
@given(data=sections)
def test_recipes_of_arbitrary_keys_and_values(data: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        load_or_refuse(Path(folder), yaml.safe_dump(data).encode())


@examples(100)
@given(content=st.binary(max_size=80) | st.text(max_size=80).map(str.encode))
def test_recipe_files_of_arbitrary_bytes(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        load_or_refuse(Path(folder), content)


@examples(150)
@given(
    overrides=st.lists(
        st.tuples(st.sampled_from(KEYS) | st.text(max_size=12), st.text(max_size=12)).map(
            lambda pair: f"{pair[0]}.{pair[1]}" if pair[1].startswith("x") else "=".join(pair)
        )
        | st.sampled_from(["train.trl.a=1", "train.trl.a.b=2", "lora.r=[1]", "=", "model"]),
        max_size=3,
    )
)
def test_arbitrary_dotted_overrides(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        load_or_refuse(Path(folder), b"", tuple(overrides))


# --- defects found, each with its test --------------------------------------------------

BOMB = "\n".join(
    [
        "train:",
        "  trl:",
        "    a0: &a0 [x, x, x, x, x, x, x, x, x]",
        *(f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)),
    ]
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00model: {}", "not UTF-8"),  # was: UnicodeDecodeError
        (b"model: " + b"[" * 5000, "nested too deeply"),  # was: RecursionError
        (b"lora: {r: " + b"9" * 5000 + b"}", "not valid YAML"),  # was: ValueError
        (BOMB.encode(), "more than 10000 values"),  # was: 9**9 values built on saving
        (b"train: {trl: &a {x: *a}}", "contains itself"),  # was: RecursionError on saving
        (b"model: {name: [&a [x, x, x, x, x, x, x, x, x, x], *a, *a]}", "expected str"),
        (b"pairs: {mix: {image-weakening: [1, 2]}}", "pairs.mix.image-weakening"),  # was: kept
        (b"- model\n- train\n", "must be a mapping"),
        (b"model: !!python/object/apply:os.system [echo]", "not valid YAML"),
    ],
    ids=["binary", "deep", "huge-int", "bomb", "self", "repr", "mix-values", "list", "tag"],
)
def test_hostile_recipe_files_are_config_errors(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message) as caught:
        load_recipe(path)
    assert time.perf_counter() - start < 10.0  # the deep one takes ~2 s in PyYAML
    assert str(path) in str(caught.value) and len(str(caught.value)) < 1000


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.trl.a.b=2", "train.trl.a is not a mapping"),  # was: TypeError
        ("train.trl.x=&a [*a]", "contains itself"),
        ("lora.r=" + "9" * 5000, "expected int"),  # was: ValueError
    ],
)
def test_hostile_overrides_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe(None, ["train.trl.a=1", override])


def test_anchors_that_stay_small_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("lora: {target_modules: &m [q_proj, v_proj]}\ntrain: {trl: {m: *m}}\n")
    recipe = load_recipe(path)
    assert recipe.train.trl == {"m": ["q_proj", "v_proj"]}
    assert recipe.lora.target_modules == ["q_proj", "v_proj"]


# --- lexicon files (object extraction for CHAIR and co-occurrence) ------------------------

lexicon_data = st.one_of(
    st.dictionaries(st.text(max_size=8), either(st.lists(st.text(max_size=8), max_size=3))),
    st.fixed_dictionaries(
        {"categories": either(st.just({"dog": ["puppy"], "cat": []}))},
        optional={
            "phrases": either(st.just({"hot dog": None, "baby dog": "dog"})),
            "exclusions": either(st.dictionaries(st.text(max_size=5), either(st.just(["cat"])))),
            "supercategories": either(st.just({"dog": "animal"})),
            "about": json_values,
        },
    ),
    json_values,
)


@examples(150)
@given(data=lexicon_data)
def test_lexicons_from_arbitrary_data(data: Any) -> None:
    try:
        lexicon = ObjectLexicon.from_dict(data)
    except ConfigError:
        return
    assert ObjectLexicon.from_dict(lexicon.to_dict()).to_dict() == lexicon.to_dict()


@examples(60)
@given(content=st.binary(max_size=60), suffix=st.sampled_from([".json", ".yaml"]))
def test_lexicon_files_of_arbitrary_bytes(content: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"lexicon{suffix}"
        path.write_bytes(content)
        with contextlib.suppress(ConfigError):
            ObjectLexicon.load(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("l.yaml", b"{1: [a], 2: [b], categories: {dog: []}}"),  # was: TypeError in sorted()
        ("l.yaml", b"categories: {dog: []}\nphrases: {1: dog}"),  # was: TypeError
        ("l.json", b'{"categories": {"dog": []}, "exclusions": {"seat": 5}}'),  # was: TypeError
        ("l.json", b"\xff\xfe"),  # was: UnicodeDecodeError
        ("l.json", b"[" * 100_000),  # was: RecursionError
        ("l.yaml", BOMB.replace("train:\n  trl:", "categories:").encode()),
    ],
    ids=["int-keys", "int-phrase", "int-exclusion", "binary", "deep", "bomb"],
)
def test_hostile_lexicon_files_are_config_errors(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError):
        ObjectLexicon.load(path)
