"""`bpo eval` end to end on the tiny LLaVA and real photos: through hf, and through openai
against `bpo serve` running as its own process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpo.cli import main
from bpo.eval.chair import score_chair
from bpo.eval.pope import score_pope
from tests.eval.conftest import PHOTOS, Server, coco_name, read_jsonl, write_jsonl


def test_pope_through_hf(
    tmp_path: Path, tiny_llava_path: Path, photo_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"question_id": i, "image": coco_name(i % 3 + 1), "text": f"Is there a {o} in the image?",
         "label": label}
        for i, (o, label) in enumerate([("person", "yes"), ("cat", "yes"), ("cup", "yes"),
                                         ("dog", "no")])
    ]  # fmt: skip
    data = write_jsonl(tmp_path / "coco_pope_random.json", rows)
    out = tmp_path / "run"
    argv = [
        "eval", "--bench", "pope", "--data", str(data), "--image-root", str(photo_root),
        "--model", str(tiny_llava_path), "--backend", "hf", "--out", str(out),
        "--max-new-tokens", "4", "--batch-size", "3", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "random" in capsys.readouterr().out
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [row["id"] for row in predictions] == [f"random/{i}" for i in range(4)]
    results = json.loads((out / "results.json").read_text())
    # The saved metrics are the reference scorer's on the saved answers.
    expected = score_pope([row["answer"] for row in predictions], [row["label"] for row in rows])
    assert results["metrics"]["random"] == expected
    assert results["settings"]["model"] == str(tiny_llava_path)
    assert results["settings"]["temperature"] == 0.0

    # Re-running resumes: nothing left to generate, the same numbers.
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert (again["counts"]["resumed"], again["counts"]["generated"]) == (4, 0)
    assert again["metrics"] == results["metrics"]


def test_chair_through_hf_and_through_bpo_serve_agree(
    tmp_path: Path, tiny_llava_path: Path, tiny_llava_server: Server, photo_root: Path
) -> None:
    data = write_jsonl(
        tmp_path / "chair.jsonl",
        [
            {"image": coco_name(1), "objects": ["person"]},
            {"image": coco_name(2), "objects": ["cat"]},
            {"image": coco_name(3), "objects": ["cup", "dining table"]},
        ],
    )
    common = [
        "eval", "--bench", "chair", "--data", str(data), "--image-root", str(photo_root),
        "--max-new-tokens", "8", "--no-progress",
    ]  # fmt: skip
    local, remote = tmp_path / "hf", tmp_path / "openai"
    assert main([*common, "--model", str(tiny_llava_path), "--out", str(local)]) == 0
    served = [
        "--backend", "openai", "--model", "tiny-llava",
        "--base-url", f"{tiny_llava_server.url}/v1", "--out", str(remote),
    ]  # fmt: skip
    assert main([*common, *served]) == 0

    local_rows = read_jsonl(local / "predictions.jsonl")
    remote_rows = read_jsonl(remote / "predictions.jsonl")
    assert [row["id"] for row in local_rows] == [f"coco-{i}" for i in range(1, len(PHOTOS) + 1)]
    # Greedy decoding: the server sees the same prompt and pixels, so it answers the same.
    assert [row["answer"] for row in remote_rows] == [row["answer"] for row in local_rows]
    results = json.loads((remote / "results.json").read_text())
    expected = score_chair(
        [row["answer"] for row in local_rows], [["person"], ["cat"], ["cup", "dining table"]]
    )
    assert results["metrics"] == expected["metrics"]
    assert results["settings"]["backend"] == "openai"
    assert [caption["objects"] for caption in results["details"]["captions"]] == [
        ["person"],
        ["cat"],
        ["cup", "dining table"],
    ]


def test_mmhal_with_a_judge_behind_bpo_serve(
    tmp_path: Path, tiny_llava_path: Path, tiny_llava_server: Server, photo_root: Path
) -> None:
    records = [
        {
            "question_type": question_type,
            "question_topic": "misc",
            "image_id": str(i),
            "image_src": f"https://example.org/{coco_name(i % 3 + 1)}",
            "image_content": ["Person"],
            "question": "What is in the image?",
            "gt_answer": "A person.",
        }
        for i, question_type in enumerate(["attribute", "counting", "other"])
    ]
    data = tmp_path / "response_template.json"
    data.write_text(json.dumps(records))
    out = tmp_path / "run"
    argv = [
        "eval", "--bench", "mmhal", "--data", str(data), "--image-root", str(photo_root),
        "--model", str(tiny_llava_path), "--max-new-tokens", "6", "--out", str(out),
        "--judge-model", "tiny-llava", "--judge-base-url", f"{tiny_llava_server.url}/v1",
        "--judge-max-new-tokens", "6", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    metrics = results["metrics"]
    # A random model is no judge: whatever it wrote is parsed or counted, never a crash.
    assert metrics["rated"] + metrics["missing"] + metrics["malformed"] == 3
    assert metrics["judge_calls"] == 3
    assert set(metrics["by_type"]) == {"attribute", "counting", "other"}
    assert len(read_jsonl(out / "judge_cache.jsonl")) == 3
    assert results["settings"]["judge"] == {"backend": "openai", "model": "tiny-llava"}
    # Re-running costs nothing: answers resumed, judgements cached.
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["metrics"]["judge_calls"] == 0
    assert again["counts"]["generated"] == 0
    assert again["details"]["questions"] == results["details"]["questions"]
