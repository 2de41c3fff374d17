import json
from pathlib import Path

from bpo.exports import IMAGE_TOKEN, export_llamafactory
from tests.exports.examples import make_pairs


def test_llamafactory_export_matches_the_sharegpt_preference_format(pairs_path, image_root):
    result = export_llamafactory(pairs_path, pairs_path.parent, image_root=image_root)
    assert result.rows == result.pairs == 5
    records = json.loads((pairs_path.parent / "pairs_llamafactory.json").read_text())
    pairs = make_pairs()
    for record, pair in zip(records, pairs, strict=True):
        expected_keys = ["conversations", "chosen", "rejected"]
        expected_keys += ["images"] if pair.image else []
        assert list(record) == expected_keys
        assert record["chosen"] == {"from": "gpt", "value": pair.chosen}
        assert record["rejected"] == {"from": "gpt", "value": pair.rejected}
        turns = record["conversations"]
        assert all(list(turn) == ["from", "value"] for turn in turns)
        # An optional system turn, then human/gpt alternating and ending with human.
        roles = [turn["from"] for turn in turns if turn["from"] != "system"]
        assert roles == ["human", "gpt"] * (len(roles) // 2) + ["human"]
        tokens = sum(turn["value"].count(IMAGE_TOKEN) for turn in turns)
        if pair.image:
            first_human = next(turn for turn in turns if turn["from"] == "human")
            assert first_human["value"].startswith(IMAGE_TOKEN) and tokens == 1
            (path,) = record["images"]
            assert Path(path).is_absolute() and Path(path) == (image_root / pair.image).resolve()
        else:
            assert tokens == 0
    assert records[1]["conversations"][0] == {"from": "system", "value": "Answer briefly."}


def test_llamafactory_dataset_info_declares_the_file_and_keeps_other_entries(pairs_path):
    info_path = pairs_path.parent / "dataset_info.json"
    info_path.write_text(json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}))
    export_llamafactory(pairs_path, pairs_path.parent, name="bpo_pairs")
    info = json.loads(info_path.read_text())
    assert info["alpaca_en_demo"] == {"file_name": "alpaca_en_demo.json"}
    assert info["bpo_pairs"] == {
        "file_name": "bpo_pairs_llamafactory.json",
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {
            "messages": "conversations",
            "chosen": "chosen",
            "rejected": "rejected",
            "images": "images",
        },
        "tags": {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            "system_tag": "system",
        },
    }
    records = json.loads((pairs_path.parent / "bpo_pairs_llamafactory.json").read_text())
    assert records[0]["images"] == ["astronaut.jpg"]  # no image root: paths as in the pairs
