"""The object lexicon: COCO categories, synonyms, plurals, multi-word names, user files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpo.errors import ConfigError
from bpo.lexicon import ObjectLexicon, pluralize

COCO_TWO_WORD = (
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "sports ball",
    "baseball bat",
    "baseball glove",
    "tennis racket",
    "wine glass",
    "hot dog",
    "potted plant",
    "dining table",
    "cell phone",
    "teddy bear",
    "hair drier",
)


@pytest.fixture(scope="module")
def lexicon() -> ObjectLexicon:
    return ObjectLexicon.default()


def test_default_has_the_80_coco_categories_each_with_a_supercategory(
    lexicon: ObjectLexicon,
) -> None:
    assert len(lexicon) == 80
    assert set(COCO_TWO_WORD) <= set(lexicon.categories)
    assert {lexicon.supercategory(c) for c in ("dog", "cat", "zebra")} == {"animal"}
    assert all(lexicon.supercategory(c) for c in lexicon.categories)


def test_every_name_and_synonym_and_its_plural_finds_its_category(
    lexicon: ObjectLexicon,
) -> None:
    for category in lexicon.categories:
        for word in lexicon.synonyms(category):
            assert lexicon.find(f"I see a {word} here.") == [category], word
            assert lexicon.find(f"I see {pluralize(word)} here.") == [category], word


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two men, three women and their children.", ["person"] * 3),
        ("People walk by.", ["person"]),
        ("Knives and mice and geese.", ["knife", "mouse", "bird"]),
        ("Cattle and oxen graze.", ["cow", "cow"]),
        ("A pair of skis and some scissors.", ["skis", "scissors"]),
        ("Two policemen and a doberman; dobermans bark.", ["person", "dog", "dog"]),
        ("A puppy, a kitten, a sofa and a fridge.", ["dog", "cat", "couch", "refrigerator"]),
        ("A motor bike next to a motorbike.", ["motorcycle", "motorcycle"]),
        ("Buses and puppies and ponies.", ["bus", "dog", "horse"]),
    ],
)
def test_plurals_irregular_plurals_and_synonyms(
    lexicon: ObjectLexicon, text: str, expected: list[str]
) -> None:
    assert lexicon.find(text) == expected


@pytest.mark.parametrize("name", COCO_TWO_WORD)
def test_two_word_names_are_matched_before_their_words(lexicon: ObjectLexicon, name: str) -> None:
    assert lexicon.find(f"There is a {name} here.") == [name]
    assert lexicon.find(f"There are two {pluralize(name)} here.") == [name]
    assert lexicon.find(f"A {name.replace(' ', '-')}.") == [name]


def test_hot_dog_is_not_a_dog_but_a_dog_still_is(lexicon: ObjectLexicon) -> None:
    assert lexicon.find("A hot dog and a dog; a teddy bear and a bear.") == [
        "hot dog",
        "dog",
        "teddy bear",
        "bear",
    ]
    # Punctuation between the words ends the name.
    assert lexicon.find("It is hot. Dog days.") == ["dog"]


def test_word_boundaries(lexicon: ObjectLexicon) -> None:
    assert lexicon.find("A catch in the category of scattered carpets and dogmas.") == []
    assert lexicon.find("The cat will catch it; the cat's bowl.") == ["cat", "cat", "bowl"]


def test_an_object_named_twice_counts_twice_and_case_is_ignored(lexicon: ObjectLexicon) -> None:
    text = "A DOG chases another Dog past a Cat."
    assert lexicon.find(text) == ["dog", "dog", "cat"]
    assert lexicon.objects(text) == {"dog", "cat"}


def test_mentions_give_spans_surface_and_number(lexicon: ObjectLexicon) -> None:
    text = "Two Hot Dogs and an apple."
    mentions = lexicon.mentions(text)
    assert [(m.surface, m.category, m.plural) for m in mentions] == [
        ("Hot Dogs", "hot dog", True),
        ("apple", "apple", False),
    ]
    assert all(text[m.start : m.end] == m.surface for m in mentions)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A baby elephant and a baby.", ["elephant", "person"]),
        ("A passenger jet and a passenger.", ["airplane", "person"]),
        ("A toilet seat.", ["toilet"]),
        ("The seat of the toilet is up.", ["toilet"]),
        ("An empty seat.", ["chair"]),
        ("He runs to home plate along the train tracks.", []),
    ],
)
def test_chair_special_cases(lexicon: ObjectLexicon, text: str, expected: list[str]) -> None:
    assert lexicon.find(text) == expected


@pytest.mark.parametrize(
    ("word", "plural"),
    [
        ("dog", "dogs"),
        ("bus", "buses"),
        ("puppy", "puppies"),
        ("toy", "toys"),
        ("knife", "knives"),
        ("man", "men"),
        ("policewoman", "policewomen"),
        ("human", "humans"),
        ("sheep", "sheep"),
        ("hot dog", "hot dogs"),
        ("pair of skis", "pairs of skis"),
    ],
)
def test_pluralize(word: str, plural: str) -> None:
    assert pluralize(word) == plural


def test_load_a_user_file_and_extend_the_default(lexicon: ObjectLexicon, tmp_path: Path) -> None:
    path = tmp_path / "extra.json"
    path.write_text(json.dumps({"lamp": ["lantern"], "dog": ["wolfhound"], "shelf": []}))
    extended = lexicon.extend(ObjectLexicon.load(path))
    text = "Two lamps, three lanterns, two wolfhounds and the shelves."
    assert extended.find(text) == ["lamp", "lamp", "dog", "shelf"]
    assert lexicon.find(text) == []  # the default is unchanged
    assert extended.find("A hot dog.") == ["hot dog"]  # and its rules kept


def test_load_yaml_structured_file(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.yaml"
    path.write_text(
        "categories:\n  cup: [mug]\n  tea: []\n"
        "phrases:\n  tea cup: cup\n  cup holder: null\n"
        "supercategories:\n  cup: kitchen\n"
    )
    lexicon = ObjectLexicon.load(path)
    assert lexicon.find("Mugs, tea, tea cups and a cup holder.") == ["cup", "tea", "cup"]
    assert lexicon.supercategory("cup") == "kitchen"
    assert lexicon.supercategory("tea") is None


def test_extension_moves_a_word_to_the_user_category(lexicon: ObjectLexicon) -> None:
    extended = lexicon.extend({"van": ["minivan"]})
    assert extended.find("A van and a minivan near a car.") == ["van", "van", "car"]
    assert lexicon.find("A van.") == ["car"]


def test_round_trip_through_to_dict_and_save(lexicon: ObjectLexicon, tmp_path: Path) -> None:
    text = "A baby dog on the toilet seat beside two hot dogs and a man's phone."
    lexicon.save(tmp_path / "lexicon.json")
    reloaded = ObjectLexicon.load(tmp_path / "lexicon.json")
    assert (
        reloaded.find(text)
        == lexicon.find(text)
        == ["dog", "toilet", "hot dog", "person", "cell phone"]
    )
    assert reloaded.to_dict() == lexicon.to_dict()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "extra.json:1"),
        ('["dog"]', "non-empty mapping"),
        ('{"dog": [1, 2]}', "list of strings"),
        ('{"categories": {"dog": []}, "phrases": {"baby dog": "puppy"}}', "unknown category"),
        ('{"categories": {"dog": []}, "colours": {}}', "unknown keys"),
    ],
)
def test_bad_lexicon_files_raise_config_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "extra.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        ObjectLexicon.load(path)


def test_missing_lexicon_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ObjectLexicon.load(tmp_path / "absent.json")
