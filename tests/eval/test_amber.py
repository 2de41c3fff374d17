"""AMBER: nouns read as inference.py reads them, both tasks scored by hand, its own files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bpo.errors import ConfigError, ErrorPolicy
from bpo.eval.amber import AmberData, read_answer, score_items
from bpo.eval.amber_nouns import extract_nouns, lemmatize
from bpo.eval.runner import EvalOptions, evaluate
from tests.eval.conftest import FakeBackend, coco_name, read_jsonl

RELATION = {
    "person": ["man", "woman", "people"],
    "dog": [],
    "cat": [],
    "car": ["tire"],
    "sign": [],
    "bench": ["chair"],
    "watch": [],
    "can": [],
    "sunglasses": [],
    "child": ["kid"],
    "air-conditioning": [],
}
ANNOTATIONS = [
    {"id": 1, "type": "generative", "truth": ["person", "dog"], "hallu": ["cat", "car"]},
    {"id": 2, "type": "generative", "truth": ["person", "dog"], "hallu": ["cat", "car"]},
    {"id": 1005, "type": "discriminative-hallucination", "truth": "yes"},
    {"id": 1006, "type": "discriminative-hallucination", "truth": "no"},
    {"id": 1007, "type": "discriminative-attribute-state", "truth": "no"},
    {"id": 1008, "type": "discriminative-attribute-number", "truth": "yes"},
    {"id": 1009, "type": "relation", "truth": "no"},
    {"id": 1010, "type": "discriminative-relation", "truth": "yes"},
]
DESCRIPTIONS = {
    # nouns: man, dog, car, sign, cat, man
    1: "A man walks two dogs past a car. A sign and a cat. The man smiles.",
    # nouns: woman
    2: "A woman.",
}
YES_NO = {
    1005: "Yes",  # truth yes: right
    1006: "No",  # truth no: right
    1007: "No, it is not.",  # truth no: neither Yes nor No to the reference; no to robust
    1008: "No",  # truth yes: wrong, an answered No
    1009: "no",  # truth no: lower-case is not "No" to the reference; no to robust
    1010: "Yes",  # truth yes: right
}


def amber_dir(tmp_path: Path, queries: list[dict[str, Any]] | None = None) -> Path:
    """AMBER's data/ layout: annotations.json, relation.json, safe_words.txt, query/."""
    root = tmp_path / "data"
    (root / "query").mkdir(parents=True)
    (root / "annotations.json").write_text(json.dumps(ANNOTATIONS))
    (root / "relation.json").write_text(json.dumps(RELATION))
    (root / "safe_words.txt").write_text("sign\nlight")  # no trailing newline, as released
    queries = queries or [
        {"id": a["id"], "image": coco_name(1), "query": "Describe this image."}
        if a["type"] == "generative"
        else {"id": a["id"], "image": coco_name(2), "query": "Is there a dog in this image?"}
        for a in ANNOTATIONS
    ]
    (root / "query" / "query_all.json").write_text(json.dumps(queries, indent=4))
    return root


@pytest.mark.parametrize(
    ("text", "nouns"),
    [
        # WordNet's noun rules: plural to singular; "people" is itself a WordNet noun.
        ("two dogs, three benches and people", ["dog", "bench", "people"]),
        # Irregular plurals come from WordNet's exception list.
        ("the children", ["child"]),
        # Case-sensitive, as the reference: "Dogs" is no AMBER word (WordNet
        # lemmatizes lower-case forms only), so it is not counted.
        ("Dogs run. A dog.", ["dog"]),
        # A verb after "to", a modal or a pronoun is not a noun; "can" is a noun only
        # after a determiner.
        ("people like to watch; you can watch. a can and a watch", ["people", "can", "watch"]),
        # "sunglasses" lemmatizes to "sunglass", which is no AMBER word: never counted.
        ("a pair of sunglasses", []),
        # Hyphenated words are one token, as word_tokenize keeps them.
        ("an air-conditioning unit", ["air-conditioning"]),
        ("a cat's toy", ["cat"]),
    ],
)
def test_nouns_as_inference_py_counts_them(text: str, nouns: list[str]) -> None:
    vocabulary = frozenset(RELATION) | {w for words in RELATION.values() for w in words}
    assert extract_nouns(text, vocabulary) == nouns


def test_lemmatize_keeps_the_shortest_amber_word() -> None:
    vocabulary = frozenset({"bus", "glass", "kiwi", "shelf"})
    assert lemmatize("buses", vocabulary) == "bus"  # -ses -> -s ("buse" is no word)
    assert lemmatize("glasses", vocabulary) == "glass"
    assert lemmatize("kiwis", vocabulary) == "kiwi"
    assert lemmatize("shelves", vocabulary) == "shelf"  # -ves -> -f
    assert lemmatize("bus", vocabulary) == "bus"


def test_generative_and_discriminative_scores_by_hand(tmp_path: Path) -> None:
    data = AmberData.load(amber_dir(tmp_path))
    from bpo.eval.amber import load_items

    items = load_items(tmp_path / "data" / "query" / "query_all.json")
    answers = {f"amber-{i}": text for i, text in {**DESCRIPTIONS, **YES_NO}.items()}
    metrics, details = score_items(items, answers, data)

    first = details["descriptions"][0]
    assert first["nouns"] == ["man", "dog", "car", "sign", "cat", "man"]
    # "sign" is a safe word (skipped, still counted among the nouns); "man" is a
    # related word of "person": it covers person; car and cat are hallucinations,
    # and both are annotated hallu objects, so both count for Cog.
    assert first["hallucinated"] == ["car", "cat"]
    assert first["covered"] == ["person", "dog"]
    assert first["cognised"] == ["cat", "car"]
    generative = metrics["generative"]
    assert generative["chair"] == pytest.approx(2 / 7)  # (2 + 0) hallucinated / (6 + 1) nouns
    assert generative["cover"] == pytest.approx(3 / 4)  # (2 + 1) covered / (2 + 2) truth
    assert generative["hal"] == pytest.approx(1 / 2)  # 1 of 2 descriptions hallucinates
    assert generative["cog"] == pytest.approx(2 / 4)  # (2 + 0) of (2 + 2) hallu objects

    # Reference (exact "Yes"/"No"): right 1005, 1006, 1010 -> 3/6. "No" the positive
    # class: answered No 1006, 1008 (1 right) -> precision 1/2; truth no 1006, 1007,
    # 1009 -> recall 1/3; F1 = 2 * 1/2 * 1/3 / (1/2 + 1/3) = 0.4.
    overall = metrics["discriminative"]
    assert overall["accuracy"] == pytest.approx(0.5)
    assert (overall["precision"], overall["recall"]) == pytest.approx((1 / 2, 1 / 3))
    assert overall["f1"] == pytest.approx(0.4)
    assert metrics["existence"] == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0,
                                    "f1": 1.0, "n": 2}  # fmt: skip
    # attribute = state (1007) + number (1008): both wrong, 1008's No is wrong.
    assert metrics["attribute"]["accuracy"] == 0.0 and metrics["attribute"]["n"] == 2
    assert metrics["state"]["n"] == metrics["number"]["n"] == 1 and "action" not in metrics
    # relation: both types not named elsewhere ("relation", "discriminative-relation").
    assert (metrics["relation"]["accuracy"], metrics["relation"]["n"]) == (0.5, 2)
    assert metrics["amber_score"] == pytest.approx((1 - 2 / 7 + 0.4) / 2)
    assert metrics["parser_disagreements"] == 2  # 1007 and 1009

    robust, _ = score_items(items, answers, data, parser="robust")
    # Robust reads 1007 and 1009 as no: right 5/6; answered No 4 (3 right) -> 3/4;
    # recall 3/3; F1 = 2 * 3/4 / (3/4 + 1) = 6/7.
    assert robust["discriminative"]["accuracy"] == pytest.approx(5 / 6)
    assert robust["discriminative"]["f1"] == pytest.approx(6 / 7)
    assert robust["generative"] == generative  # the parser reads yes/no answers only


def test_yes_no_reading() -> None:
    assert read_answer("Yes") == "yes" and read_answer("No") == "no"
    assert read_answer("Yes.") is None and read_answer(" No") is None
    assert read_answer("Yes.", "robust") == "yes"
    with pytest.raises(ConfigError, match="reference, robust"):
        read_answer("Yes", "lenient")


def test_a_response_file_scored_and_a_run_generated(tmp_path: Path, photo_root: Path) -> None:
    folder = amber_dir(tmp_path)
    # AMBER's response format: a JSON array of {"id", "response"}.
    responses = [{"id": i, "response": text} for i, text in {**DESCRIPTIONS, **YES_NO}.items()]
    response_file = tmp_path / "responses.json"
    response_file.write_text(json.dumps(responses))
    scored = evaluate(
        EvalOptions(bench="amber", out=tmp_path / "scored", amber_dir=folder,
                    predictions=response_file, progress=False)
    )  # fmt: skip
    assert scored["metrics"]["generative"]["chair"] == pytest.approx(2 / 7)
    assert scored["metrics"]["discriminative"]["f1"] == pytest.approx(0.4)
    assert scored["settings"]["parser"] == "reference"

    def answer(request: Any) -> str:
        return "A dog." if "Describe" in request.messages[0]["content"] else "Yes"

    options = EvalOptions(
        bench="amber", out=tmp_path / "run", amber_dir=folder, image_root=photo_root,
        batch_size=3, progress=False,
    )  # fmt: skip
    model = FakeBackend(answer=answer)
    results = evaluate(options, backend=model)
    assert results["counts"]["answered"] == 8 and len(model.requests) == 8
    assert model.requests[0].max_new_tokens == 512
    assert model.requests[0].messages[0]["content"] == "Describe this image."
    # "A dog.": one noun, covering dog; no hallucination.
    assert results["metrics"]["generative"]["cover"] == pytest.approx(2 / 4)
    assert results["metrics"]["generative"]["chair"] == 0.0
    assert read_jsonl(tmp_path / "run" / "predictions.jsonl")[0]["id"] == "amber-1"
    # A re-run answers nothing new; one with another prompt is refused.
    again = FakeBackend(answer=answer)
    assert evaluate(options, backend=again)["counts"]["resumed"] == 8 and again.calls == 0
    options.prompt = "{question} Answer briefly."
    with pytest.raises(ConfigError, match="other settings: prompt"):
        evaluate(options, backend=FakeBackend(answer=answer))


def test_bad_ground_truth_is_named(tmp_path: Path) -> None:
    folder = amber_dir(tmp_path)
    with pytest.raises(ConfigError, match="--amber-dir"):
        evaluate(EvalOptions(bench="amber", out=tmp_path / "o", data=folder / "query" / "x"))
    (folder / "relation.json").write_text(json.dumps({"dog": []}))  # person etc. missing
    data = AmberData.load(folder)
    from bpo.eval.amber import load_items

    items = load_items(folder / "query" / "query_all.json", limit=1)
    policy = ErrorPolicy(on_error="skip")
    metrics, _ = score_items(items, {"amber-1": "A dog."}, data, policy=policy)
    assert "generative" not in metrics and policy.counts == {"no-ground-truth": 1}
