import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from bpo.cli import main
from bpo.data.records import Pair
from bpo.errors import ConfigError, ErrorPolicy, ImageError, RecordError
from bpo.exports import IMAGE_TOKEN, export_llamafactory, llamafactory_dataset_info
from tests.exports.examples import make_pairs


def llamafactory_media_path(media_dir: Path, path: str) -> str:
    """The file LLaMA-Factory opens for an image path of a local dataset.

    As `DatasetConverter._find_medias` does (hiyouga/LLaMA-Factory,
    src/llamafactory/data/converter.py): the path joined to ``media_dir`` (which
    defaults to ``dataset_dir``, hparams/data_args.py) if that is a file, else the
    path as written, relative to the trainer's working directory.
    """
    joined = os.path.join(media_dir, path)
    return joined if os.path.isfile(joined) else path


def file_hashes(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) by relative path, with its SHA-256."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def write_pairs(path: Path, pairs: list[Pair]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in pairs), encoding="utf-8")
    return path


def with_image(pair: Pair, image: str | None, *, id: str | None = None) -> Pair:
    return Pair(id or pair.id, image, pair.prompt, pair.chosen, pair.rejected, pair.strategy)


@pytest.fixture
def project(tmp_path, image_root):
    """A project folder: images/ (the image root), data/ (LLaMA-Factory's dataset_dir), pairs."""
    root = tmp_path / "project"
    shutil.copytree(image_root, root / "images")
    write_pairs(root / "runs" / "pairs.jsonl", make_pairs())
    (root / "data").mkdir()
    return root


def read_records(dataset_dir: Path, name: str = "pairs") -> list[dict]:
    return json.loads((dataset_dir / f"{name}_llamafactory.json").read_text(encoding="utf-8"))


# --- records ----------------------------------------------------------------------------


def test_llamafactory_export_matches_the_sharegpt_preference_format(project):
    data = project / "data"
    result = export_llamafactory(project / "runs/pairs.jsonl", data, image_root=project / "images")
    assert result.rows == result.pairs == 5
    records = read_records(data)
    for record, pair in zip(records, make_pairs(), strict=True):
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
        # mm_plugin's _validate_messages: as many <image> placeholders as images.
        tokens = sum(turn["value"].count(IMAGE_TOKEN) for turn in turns)
        assert tokens == len(record.get("images", []))
    assert records[1]["conversations"][0] == {"from": "system", "value": "Answer briefly."}


def test_the_image_line_opens_the_first_user_turn_as_in_llava_data(project):
    data = project / "data"
    export_llamafactory(project / "runs/pairs.jsonl", data, image_root=project / "images")
    single, multi_turn, *_, text_only = read_records(data)
    assert single["conversations"] == [{"from": "human", "value": "<image>\nWhat is in the image?"}]
    assert [turn["value"] for turn in multi_turn["conversations"]] == [
        "Answer briefly.",
        "<image>\nWhat is this?",
        "A photo.",
        "Who holds the camera?",
    ]
    assert text_only["conversations"] == [{"from": "human", "value": "Say hi."}]


def test_a_placeholder_in_a_pairs_text_is_left_out(project):
    # LLaMA-Factory would count two placeholders for one image and refuse the sample mid-training.
    pair = make_pairs()[0]
    stray = Pair(pair.id, pair.image, pair.prompt, pair.chosen, "An <image> of a man.", "x")
    pairs = write_pairs(project / "runs/stray.jsonl", [stray, make_pairs()[2]])
    policy = ErrorPolicy("skip")
    result = export_llamafactory(
        pairs, project / "data", image_root=project / "images", policy=policy
    )
    assert result.pairs == 1 and result.left_out == {"image-token-in-text": 1}
    assert [r["rejected"]["value"] for r in read_records(project / "data", "stray")] == [
        "An astronaut holds a cup."
    ]
    with pytest.raises(RecordError, match=r"s1/image-weakening/0.*<image>"):
        export_llamafactory(pairs, project / "again", image_root=project / "images")


# --- image paths ------------------------------------------------------------------------


def test_image_paths_are_relative_to_the_dataset_folder(project):
    data = project / "data"
    export_llamafactory(project / "runs/pairs.jsonl", data, image_root=project / "images")
    paths = [record["images"] for record in read_records(data) if "images" in record]
    assert paths == [
        ["../images/astronaut.jpg"],
        ["../images/camera.png"],
        ["../images/astronaut.jpg"],
        ["../images/astronaut.jpg"],
    ]


def test_the_export_and_its_images_load_after_moving_them_together(project, tmp_path, monkeypatch):
    export_llamafactory(
        project / "runs/pairs.jsonl", project / "data", image_root=project / "images"
    )
    moved = shutil.move(project, tmp_path / "elsewhere" / "moved")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the trainer's folder: no fallback on the path as written
    dataset_dir = Path(moved) / "data"
    info = json.loads((dataset_dir / "dataset_info.json").read_text())
    records = json.loads((dataset_dir / info["pairs"]["file_name"]).read_text())
    pairs = make_pairs()
    for record, pair in zip(records, pairs, strict=True):
        for path in record.get("images", []):
            opened = llamafactory_media_path(dataset_dir, path)
            assert os.path.isfile(opened), path
            assert Path(opened).read_bytes() == (Path(moved) / "images" / pair.image).read_bytes()


def test_without_an_image_root_paths_are_taken_from_the_working_directory(project, monkeypatch):
    pairs = [with_image(p, f"images/{p.image}" if p.image else None) for p in make_pairs()]
    write_pairs(project / "runs/pairs.jsonl", pairs)
    monkeypatch.chdir(project)
    export_llamafactory("runs/pairs.jsonl", project / "data" / "bpo")
    records = read_records(project / "data" / "bpo")
    assert records[0]["images"] == ["../../images/astronaut.jpg"]
    assert records[1]["images"] == ["../../images/camera.png"]
    for record in records:
        for path in record.get("images", []):
            assert os.path.isfile(os.path.join(project / "data" / "bpo", path))


def test_a_linked_image_root_is_written_as_laid_out_and_a_linked_export_folder_resolved(
    project, tmp_path
):
    # data/images -> a folder elsewhere: the link is kept, so it moves with data/.
    shutil.move(project / "images", tmp_path / "mounted")
    (project / "data" / "images").symlink_to(tmp_path / "mounted", target_is_directory=True)
    data = project / "data"
    export_llamafactory(project / "runs/pairs.jsonl", data, image_root=data / "images")
    assert read_records(data)[0]["images"] == ["images/astronaut.jpg"]
    # exports -> a folder elsewhere: "../images" from it would climb out of the real folder.
    (tmp_path / "scratch" / "out").mkdir(parents=True)
    (project / "exports").symlink_to(tmp_path / "scratch" / "out", target_is_directory=True)
    export_llamafactory(
        project / "runs/pairs.jsonl", project / "exports", image_root=data / "images"
    )
    (path,) = read_records(project / "exports")[0]["images"]
    assert (
        Path(os.path.join(project / "exports", path)).resolve()
        == (tmp_path / "mounted" / "astronaut.jpg").resolve()
    )


@pytest.mark.parametrize("with_root", [True, False], ids=["image-root", "no-image-root"])
@pytest.mark.parametrize("unsafe", ["../../etc/passwd", "/etc/passwd"])
def test_an_image_path_leaving_the_root_is_never_written(project, monkeypatch, with_root, unsafe):
    # Without an image root, the working directory is the root (as every reader takes it).
    monkeypatch.chdir(project / "images")
    pairs = [with_image(make_pairs()[0], unsafe), make_pairs()[2]]
    pairs_path = write_pairs(project / "runs/unsafe.jsonl", pairs)
    image_root = project / "images" if with_root else None
    policy = ErrorPolicy("skip")
    result = export_llamafactory(pairs_path, project / "data", image_root=image_root, policy=policy)
    assert result.pairs == 1 and result.left_out == {"unsafe-path": 1}
    written = (project / "data" / "unsafe_llamafactory.json").read_text()
    assert "passwd" not in written and "etc" not in written
    assert json.loads(written)[0]["images"] == ["../images/astronaut.jpg"]
    with pytest.raises(ImageError, match=r"s1/image-weakening/0") as raised:
        export_llamafactory(pairs_path, project / "again", image_root=image_root)
    assert raised.value.kind == "unsafe-path"
    assert not (project / "again" / "unsafe_llamafactory.json").exists()


def test_a_missing_image_is_not_written(project):
    pairs = [with_image(make_pairs()[0], "nowhere.jpg"), make_pairs()[2]]
    pairs_path = write_pairs(project / "runs/missing.jsonl", pairs)
    policy = ErrorPolicy("skip")
    result = export_llamafactory(
        pairs_path, project / "data", image_root=project / "images", policy=policy
    )
    assert result.pairs == 1 and result.left_out == {"missing-image": 1}
    assert "nowhere" not in (project / "data" / "missing_llamafactory.json").read_text()


# --- dataset_info.json ------------------------------------------------------------------


def test_dataset_info_declares_the_file_and_keeps_other_entries(project):
    data = project / "data"
    info_path = data / "dataset_info.json"
    info_path.write_text(json.dumps({"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}))
    export_llamafactory(
        project / "runs/pairs.jsonl", data, name="bpo_pairs", image_root=project / "images"
    )
    info = json.loads(info_path.read_text())
    assert list(info) == ["alpaca_en_demo", "bpo_pairs"]
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
        "bpo_pairs": "../runs/pairs.jsonl",
    }
    assert info["bpo_pairs"] == llamafactory_dataset_info(
        "bpo_pairs_llamafactory.json", source="../runs/pairs.jsonl"
    )
    assert len(read_records(data, "bpo_pairs")) == 5


def foreign_entry() -> dict:
    return {"file_name": "pairs_llamafactory.json", "formatting": "sharegpt", "ranking": True}


def test_an_entry_of_the_same_name_is_refused_and_nothing_changes(project):
    data = project / "data"
    (data / "dataset_info.json").write_text(json.dumps({"pairs": foreign_entry()}))
    (data / "pairs_llamafactory.json").write_text('[{"conversations": []}]\n')
    before = file_hashes(data)
    with pytest.raises(ConfigError) as refused:
        export_llamafactory(project / "runs/pairs.jsonl", data, image_root=project / "images")
    assert str(data / "dataset_info.json") in str(refused.value)
    assert "'pairs'" in str(refused.value) and "overwrite" in str(refused.value)
    assert file_hashes(data) == before


def test_overwrite_replaces_the_entry_of_the_same_name_and_keeps_the_others(project):
    data = project / "data"
    info_path = data / "dataset_info.json"
    info_path.write_text(json.dumps({"mine": {"file_name": "mine.json"}, "pairs": foreign_entry()}))
    export_llamafactory(
        project / "runs/pairs.jsonl", data, image_root=project / "images", overwrite=True
    )
    info = json.loads(info_path.read_text())
    assert info["mine"] == {"file_name": "mine.json"}
    assert info["pairs"]["columns"]["images"] == "images"
    assert len(read_records(data)) == 5


def test_another_pairs_file_of_the_same_name_is_refused(project):
    data = project / "data"
    export_llamafactory(project / "runs/pairs.jsonl", data, image_root=project / "images")
    other = write_pairs(project / "other" / "pairs.jsonl", make_pairs()[:1])
    before = file_hashes(data)
    with pytest.raises(ConfigError, match=r"'pairs'.*\.\./runs/pairs\.jsonl"):
        export_llamafactory(other, data, image_root=project / "images")
    assert file_hashes(data) == before


def test_a_rerun_of_the_same_pairs_file_refreshes_its_own_entry(project):
    # `bpo pairs` appends on a rerun (and after a crash): its export follows without --overwrite.
    data = project / "data"
    pairs_path = project / "runs/pairs.jsonl"
    export_llamafactory(pairs_path, data, image_root=project / "images")
    info_before = (data / "dataset_info.json").read_bytes()
    write_pairs(pairs_path, [*make_pairs(), with_image(make_pairs()[0], "camera.png", id="s3")])
    result = export_llamafactory(pairs_path, data, image_root=project / "images")
    assert result.rows == 6 and len(read_records(data)) == 6
    assert (data / "dataset_info.json").read_bytes() == info_before


def test_an_other_entry_reading_the_same_file_is_refused_even_with_overwrite(project):
    data = project / "data"
    (data / "dataset_info.json").write_text(json.dumps({"renamed": foreign_entry()}))
    (data / "pairs_llamafactory.json").write_text("[]\n")
    before = file_hashes(data)
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match=r"'renamed'.*pairs_llamafactory\.json"):
            export_llamafactory(
                project / "runs/pairs.jsonl",
                data,
                image_root=project / "images",
                overwrite=overwrite,
            )
        assert file_hashes(data) == before


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"x": 1}'])
def test_a_dataset_info_that_cannot_be_read_is_refused_and_nothing_changes(project, content):
    data = project / "data"
    (data / "dataset_info.json").write_text(content)
    before = file_hashes(data)
    with pytest.raises(ConfigError, match=r"dataset_info\.json"):
        export_llamafactory(project / "runs/pairs.jsonl", data, image_root=project / "images")
    assert file_hashes(data) == before


def test_a_failed_export_keeps_the_previous_files_byte_for_byte(project):
    data = project / "data"
    export_llamafactory(project / "runs/pairs.jsonl", data, image_root=project / "images")
    before = file_hashes(data)
    missing = with_image(make_pairs()[0], "no.jpg", id="s3")
    write_pairs(project / "runs/pairs.jsonl", [*make_pairs(), missing])
    with pytest.raises(ImageError, match=r"'s3'.*no\.jpg"):
        export_llamafactory(project / "runs/pairs.jsonl", data, image_root=project / "images")
    assert file_hashes(data) == before


@pytest.mark.parametrize("name", ["", "a/b", "../up", ".hidden", "a,b", " padded", "a\\b"])
def test_a_dataset_name_llamafactory_cannot_select_or_that_leaves_the_folder_is_refused(
    project, name
):
    before = file_hashes(project)
    with pytest.raises(ConfigError, match="dataset name"):
        export_llamafactory(project / "runs/pairs.jsonl", project / "data", name=name)
    assert file_hashes(project) == before


# --- the command ------------------------------------------------------------------------


def cli_inputs(root: Path) -> list[str]:
    samples, negatives = root / "samples.jsonl", root / "negatives.jsonl"
    pair = make_pairs()[0]
    sample = {"id": "s1", "image": pair.image, "prompt": pair.prompt, "response": pair.chosen}
    negative = {"id": pair.id, "sample_id": "s1", "strategy": pair.strategy, "text": pair.rejected}
    samples.write_text(json.dumps(sample) + "\n")
    negatives.write_text(json.dumps(negative) + "\n")
    return ["pairs", str(samples), str(negatives), "--out", str(root / "cli" / "pairs.jsonl")]


def test_cli_dataset_name_names_the_entry_and_every_exports_files(project):
    data = project / "data"
    argv = [*cli_inputs(project), "--image-root", str(project / "images")]
    argv += ["--export", "llamafactory", "bpo", "--export-dir", str(data)]
    assert main([*argv, "--dataset-name", "bpo_llava"]) == 0
    info = json.loads((data / "dataset_info.json").read_text())
    assert list(info) == ["bpo_llava"] and info["bpo_llava"]["file_name"] == (
        "bpo_llava_llamafactory.json"
    )
    assert sorted(p.name for p in data.iterdir()) == [
        "bpo_llava_bpo.json",
        "bpo_llava_llamafactory.json",
        "dataset_info.json",
    ]
    assert read_records(data, "bpo_llava")[0]["images"] == ["../images/astronaut.jpg"]
    # The same command again (a resumed run) refreshes its own entry without --overwrite.
    before = file_hashes(data)
    assert main([*argv, "--dataset-name", "bpo_llava"]) == 0
    assert file_hashes(data) == before


def test_cli_refuses_a_foreign_entry_before_any_export_and_overwrite_replaces_it(project, capsys):
    data = project / "data"
    (data / "dataset_info.json").write_text(json.dumps({"pairs": foreign_entry()}))
    argv = [*cli_inputs(project), "--image-root", str(project / "images")]
    argv += ["--export", "bpo", "llamafactory", "--export-dir", str(data)]
    before = file_hashes(data)
    assert main(argv) == 2
    assert "'pairs'" in capsys.readouterr().err
    assert file_hashes(data) == before  # not even the bpo export, listed first, was written
    assert main([*argv, "--overwrite"]) == 0
    assert len(read_records(data)) == 1


def test_cli_overwrite_help_says_it_replaces_an_export_entry(capsys):
    with pytest.raises(SystemExit):
        main(["pairs", "--help"])
    out = capsys.readouterr().out
    assert "\n  --dataset-name NAME" in out
    overwrite_help = " ".join(out.split("\n  --overwrite", 1)[1].split("\n  --", 1)[0].split())
    assert "start OUT afresh" in overwrite_help and "dataset_info.json" in overwrite_help
