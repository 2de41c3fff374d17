import json

from bpo.data.formats import read_bpo_release
from bpo.exports import IMAGE_TOKEN, export_bpo_release
from tests.exports.examples import make_pairs


def test_bpo_export_matches_the_release_format_field_for_field(pairs_path):
    result = export_bpo_release(pairs_path, pairs_path.parent)
    records = json.loads((pairs_path.parent / "pairs_bpo.json").read_text())
    assert isinstance(records, list) and len(records) == result.rows == 1
    assert result.pairs == 3
    assert result.left_out == {"multi-turn-prompt": 1, "no-image": 1}
    (record,) = records
    assert list(record) == ["prompt", "image", "completions"]
    assert record["prompt"] == f"What is in the image?\n{IMAGE_TOKEN}"
    assert record["image"] == "astronaut.jpg"
    for completion in record["completions"]:
        assert list(completion) == ["score", "response", "type"]
        assert type(completion["score"]) is int
        assert isinstance(completion["response"], str) and isinstance(completion["type"], str)
    gold, *negatives = record["completions"]
    assert gold == {"score": 1, "response": make_pairs()[0].chosen, "type": "gt"}
    assert [(c["score"], c["type"], c["response"]) for c in negatives] == [
        (0, "mllm-hal", "A man rides a horse."),
        (0, "cooccurrence", "An astronaut holds a cup."),
        (0, "llm-hal", "Two astronauts and a rocket."),
    ]


def test_bpo_export_reads_back_to_the_same_samples_and_negatives(pairs_path):
    export_bpo_release(pairs_path, pairs_path.parent)
    ((sample, negatives),) = list(read_bpo_release(pairs_path.parent / "pairs_bpo.json"))
    pair = make_pairs()[0]
    assert (sample.image, sample.prompt, sample.response) == (pair.image, pair.prompt, pair.chosen)
    written = [p for p in make_pairs() if p.image == "astronaut.jpg"]
    assert [(n.strategy, n.text, n.sample_id) for n in negatives] == [
        (p.strategy, p.rejected, sample.id) for p in written
    ]
