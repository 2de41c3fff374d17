import json

import pytest

from bpo.cli import main
from bpo.errors import ConfigError
from bpo.exports import export_bpo_release, export_llamafactory, export_pairs, export_trl
from tests.exports.examples import make_pairs


def test_export_refuses_an_unknown_format(pairs_path):
    with pytest.raises(ConfigError, match="valid formats: trl, bpo, llamafactory"):
        export_pairs("axolotl", pairs_path, pairs_path.parent)


def test_cli_writes_every_export_into_the_export_dir(tmp_path, image_root):
    samples = tmp_path / "samples.jsonl"
    negatives = tmp_path / "negatives.jsonl"
    pair = make_pairs()[0]
    samples.write_text(
        json.dumps(
            {"id": "s1", "image": pair.image, "prompt": pair.prompt, "response": pair.chosen}
        )
        + "\n"
    )
    negatives.write_text(
        json.dumps(
            {"id": pair.id, "sample_id": "s1", "strategy": pair.strategy, "text": pair.rejected}
        )
        + "\n"
    )
    exports = tmp_path / "exports"
    argv = ["pairs", str(samples), str(negatives), "--out", str(tmp_path / "pairs.jsonl")]
    argv += ["--image-root", str(image_root), "--export", "trl", "bpo", "llamafactory"]
    assert main([*argv, "--export-dir", str(exports)]) == 0
    names = sorted(path.name for path in exports.iterdir())
    assert names == [
        "dataset_info.json",
        "pairs_bpo.json",
        "pairs_llamafactory.json",
        "pairs_trl",
        "pairs_trl.parquet",
    ]


def test_empty_pairs_export_as_empty_json_but_not_as_a_trl_dataset(tmp_path):
    pairs_path = tmp_path / "pairs.jsonl"
    pairs_path.write_text("")
    assert export_bpo_release(pairs_path, tmp_path).rows == 0
    assert json.loads((tmp_path / "pairs_bpo.json").read_text()) == []
    assert export_llamafactory(pairs_path, tmp_path).rows == 0
    with pytest.raises(ConfigError, match="nothing to export"):
        export_trl(pairs_path, tmp_path)


@pytest.mark.parametrize("format", ["trl", "bpo", "llamafactory"])
def test_a_dataset_name_that_would_leave_the_export_folder_is_refused(pairs_path, format):
    out = pairs_path.parent / "out"
    with pytest.raises(ConfigError, match=r"invalid dataset name '\.\./escaped'"):
        export_pairs(format, pairs_path, out, name="../escaped")
    assert not out.exists() and list(pairs_path.parent.glob("escaped*")) == []
