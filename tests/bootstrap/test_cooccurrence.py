"""Co-occurrence error injection: statistics, edits, the gold-objects guarantee, determinism."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bpo.bootstrap import sample_seed
from bpo.bootstrap.cooccurrence import COLOURS, SENTENCE_TEMPLATES, CooccurrenceInjector
from bpo.data.records import Sample
from bpo.errors import ConfigError
from bpo.lexicon import ObjectLexicon

CORPUS = [
    "A fork and a knife lie on a plate.",
    "A fork, a knife and a spoon on the table.",
    "The knife rests beside the fork.",
    "A fork next to a cup.",
    "Two dogs play with a frisbee.",
    "A dog catches a frisbee in the park.",
    "A dog and a cat sleep on the couch.",
    "The dog watches the cat.",
    "A dog and a frisbee on the grass.",
    "An apple and a banana in a bowl.",
    "A banana next to an apple.",
    "Bananas and apples on the counter.",
]

RESPONSES = [
    "A silver fork lies on the wooden counter.",
    "An apple sits on the red counter next to two green cups.",
    "Two dogs run in the grass. The dogs are brown.",
    "A fork and a spoon sit on a white plate.",
    "A man holds a frisbee while his dog jumps.",
    "A black cat sleeps on a couch beside 3 pillows.",
    "A sunny day with four clouds over a blue sea.",
]


def sample(sample_id: str, response: str) -> Sample:
    return Sample(
        id=sample_id,
        image=None,
        prompt=[{"role": "user", "content": "Describe the image."}],
        response=response,
    )


@pytest.fixture(scope="module")
def lexicon() -> ObjectLexicon:
    return ObjectLexicon.default()


def fitted(**options: object) -> CooccurrenceInjector:
    injector = CooccurrenceInjector(**options)  # type: ignore[arg-type]
    injector.fit(sample(f"c{i}", text) for i, text in enumerate(CORPUS))
    return injector


def generate_texts(
    injector: CooccurrenceInjector, responses: list[str], *, seed: int, num_negatives: int = 3
) -> dict[str, str]:
    batch = [(sample(f"s{i}", text), None) for i, text in enumerate(responses)]
    results = injector.generate(batch, num_negatives=num_negatives, seed=seed)
    return {negative.id: negative.text for negatives in results for negative in negatives}


def test_fit_counts_occurrences_and_cooccurrences_per_response() -> None:
    injector = fitted()
    # fork is in responses 0-3 (4), with knife in 0-2 (3): P(knife | fork) = 3/4.
    assert injector.documents == len(CORPUS)
    assert injector.object_counts["fork"] == 4
    assert injector.cooccurrences("fork", "knife") == injector.cooccurrences("knife", "fork") == 3
    assert injector.conditional_probability("knife", given="fork") == pytest.approx(3 / 4)
    assert injector.conditional_probability("fork", given="knife") == pytest.approx(1.0)
    # "dining table" from "table" once; a response counts an object once ("Two dogs ... dog").
    assert injector.object_counts["dog"] == 5


def test_insertion_into_a_fork_only_response_adds_the_knife(lexicon: ObjectLexicon) -> None:
    injector = fitted(operations=("insert",), max_edits=1)
    for seed in range(5):
        [[negative]] = injector.generate(
            [(sample("a", RESPONSES[0]), None)], num_negatives=1, seed=seed
        )
        assert negative.params["inserted"] == ["knife"]
        assert lexicon.objects(negative.text) == {"fork", "knife"}
        assert negative.text.startswith(RESPONSES[0])  # a sentence appended after it


def test_insertion_into_an_enumeration(lexicon: ObjectLexicon) -> None:
    injector = fitted(operations=("insert",), max_edits=1)
    texts = generate_texts(
        injector, ["A fork and a plate on the counter."], seed=0, num_negatives=8
    )
    assert "A fork, a knife and a plate on the counter." in texts.values()


def test_only_objects_absent_from_the_gold_are_injected(lexicon: ObjectLexicon) -> None:
    injector = fitted(min_count=1, max_edits=3)
    checked = 0
    for seed in range(12):
        batch = [(sample(f"s{i}", text), None) for i, text in enumerate(RESPONSES + CORPUS)]
        for (gold, _), negatives in zip(
            batch, injector.generate(batch, num_negatives=3, seed=seed), strict=True
        ):
            gold_objects = lexicon.objects(gold.response)
            for negative in negatives:
                injected = set(negative.params["inserted"]) | {
                    s["to"] for s in negative.params["substituted"]
                }
                assert not injected & gold_objects
                assert lexicon.objects(negative.text) - gold_objects <= injected
                assert negative.text != gold.response
                assert 1 <= len(negative.params["edits"]) <= 3
                checked += 1
    assert checked > 300


def test_generation_is_deterministic_per_seed_and_sample() -> None:
    first = generate_texts(fitted(), RESPONSES, seed=7)
    again = generate_texts(fitted(), RESPONSES, seed=7)
    # The same sample alone in its batch gives the same negatives.
    alone = generate_texts(fitted(), [RESPONSES[0]], seed=7)
    other = generate_texts(fitted(), RESPONSES, seed=8)
    assert first == again
    assert {k: v for k, v in first.items() if k.startswith("s0/")} == alone
    assert first != other


def test_negative_ids_and_params() -> None:
    [negatives] = fitted().generate([(sample("x", RESPONSES[3]), None)], num_negatives=2, seed=5)
    assert [n.id for n in negatives] == ["x/cooccurrence/0", "x/cooccurrence/1"]
    for k, negative in enumerate(negatives):
        assert negative.sample_id == "x"
        assert negative.strategy == "cooccurrence"
        assert negative.params["seed"] == 5
        assert negative.params["sample_seed"] == sample_seed(5, "x", k)
        assert negative.params["operations"] == [e["op"] for e in negative.params["edits"]]


def test_stats_save_load_round_trip(tmp_path: Path) -> None:
    injector = fitted()
    injector.save(tmp_path / "stats.json")
    loaded = CooccurrenceInjector()
    loaded.load(tmp_path / "stats.json")
    assert loaded.documents == injector.documents
    assert loaded.object_counts == injector.object_counts
    assert loaded.conditional_probability("knife", given="fork") == pytest.approx(3 / 4)
    assert generate_texts(loaded, RESPONSES, seed=3) == generate_texts(injector, RESPONSES, seed=3)


@pytest.mark.parametrize("content", ["{", '{"format": "other"}', '{"format": "bpo-cooccurrence"}'])
def test_loading_bad_stats_raises_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "stats.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"stats\.json"):
        CooccurrenceInjector().load(path)


def test_substitution_keeps_article_and_number_right() -> None:
    # In the corpus apple's only associate of its supercategory (food) is banana,
    # and dog's is cat (frisbee co-occurs more, but is no animal).
    injector = fitted(operations=("substitute",), max_edits=1)
    texts = generate_texts(
        injector,
        ["An apple on a plate.", "Two apples on a plate.", "Two dogs; the dogs bark."],
        seed=0,
        num_negatives=1,
    )
    assert texts == {
        "s0/cooccurrence/0": "A banana on a plate.",
        "s1/cooccurrence/0": "Two bananas on a plate.",
        "s2/cooccurrence/0": "Two cats; the cats bark.",
    }


def test_count_edits_change_counts_of_two_or_more() -> None:
    injector = fitted(operations=("count",), max_edits=1)
    batch = [(sample("a", "Two dogs and 3 cats."), None), (sample("b", "One dog."), None)]
    [negatives, none] = injector.generate(batch, num_negatives=4, seed=0)
    assert none == [] and injector.dropped["no-edit"] == 4
    for negative in negatives:
        [edit] = negative.params["edits"]
        assert edit["from"] in ("Two", "3") and edit["to"] != edit["from"]
        new = edit["to"]
        assert (new.isdigit() and int(new) >= 2) or new in ("Three", "Four")
        assert negative.text == "Two dogs and 3 cats.".replace(edit["from"], new)


def test_colour_edits_change_colours_but_not_objects(lexicon: ObjectLexicon) -> None:
    injector = fitted(operations=("colour",), max_edits=1)
    [negatives, oranges] = injector.generate(
        [(sample("a", "A red car and a White cat."), None), (sample("b", "An orange."), None)],
        num_negatives=4,
        seed=1,
    )
    assert oranges == []  # "orange" here is the fruit
    assert len({n.text for n in negatives}) == len(negatives) > 0
    for negative in negatives:
        [edit] = negative.params["edits"]
        assert edit["from"] in ("red", "White")
        assert edit["to"].lower() in COLOURS and edit["to"].lower() != edit["from"].lower()
        assert edit["to"].lower() != "orange"
        assert lexicon.find(negative.text) == ["car", "cat"]


def test_responses_without_objects_fall_back_to_counts_and_colours() -> None:
    injector = fitted()
    [negatives, none] = injector.generate(
        [(sample("a", RESPONSES[6]), None), (sample("b", "Nothing to see."), None)],
        num_negatives=3,
        seed=0,
    )
    assert negatives and none == []
    assert all(set(n.params["operations"]) <= {"count", "colour"} for n in negatives)
    assert injector.dropped["no-edit"] == 3


def test_sentence_templates_name_no_object(lexicon: ObjectLexicon) -> None:
    for template in SENTENCE_TEMPLATES:
        assert lexicon.find(template.format(be="is", obj="", Obj="", anchor="")) == []


def test_edits_never_exceed_max_edits() -> None:
    injector = fitted(max_edits=1)
    rng = random.Random(0)
    for response in RESPONSES:
        outcome = injector.rewrite(response, rng)
        assert outcome is not None and len(outcome[1]) == 1


@pytest.mark.parametrize(
    "options",
    [
        {"operations": ("insert", "teleport")},
        {"operations": ()},
        {"max_edits": 0},
        {"min_count": 0},
    ],
)
def test_bad_settings_raise_config_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CooccurrenceInjector(**options)  # type: ignore[arg-type]


def test_runs_through_the_bootstrap_runner(dataset: Path, tmp_path: Path) -> None:
    from bpo.bootstrap.runner import run_bootstrap
    from bpo.data.formats import read_records
    from bpo.data.records import Negative

    out = tmp_path / "negatives.jsonl"
    summary = run_bootstrap(
        dataset, CooccurrenceInjector(), out, num_negatives=2, seed=0, progress=False
    )
    negatives = list(read_records(out, Negative))
    assert summary.negatives_written == len(negatives) > 0
    assert {n.strategy for n in negatives} == {"cooccurrence"}
