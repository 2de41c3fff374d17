"""The runner and `bpo eval`: resume, settings guard, --predictions, errors, compare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bpo.cli import main
from bpo.errors import BpoError, ConfigError
from bpo.eval.compare import compare_results, flatten
from bpo.eval.runner import EvalOptions, evaluate
from tests.eval.conftest import FakeBackend, coco_name, read_jsonl, write_jsonl
from tests.snapshot import folder_digest


def pope_data(folder: Path) -> Path:
    """Two splits of three questions about the three photos (labels yes, no, yes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("random", "popular"):
        rows = [
            {
                "question_id": i,
                "image": coco_name(i + 1),
                "text": f"Is there a {object_} in the image?",
                "label": "no" if i == 1 else "yes",
            }
            for i, object_ in enumerate(("person", "dog", "cup"))
        ]
        write_jsonl(folder / f"coco_pope_{split}.json", rows)
    return folder


def answer_dog_no(request: Any) -> str:
    return "No, there is not." if "dog" in request.messages[0]["content"] else "Yes."


def test_pope_run_resumes_after_a_failure(tmp_path: Path, photo_root: Path) -> None:
    data = pope_data(tmp_path / "pope")
    options = EvalOptions(
        bench="pope", out=tmp_path / "run", data=data, image_root=photo_root, batch_size=2,
        progress=False,
    )  # fmt: skip
    # The server gives up on the second batch: the first batch's answers are kept.
    failing = FakeBackend(answer=answer_dog_no, fail_on_call=2)
    with pytest.raises(BpoError, match="503"):
        evaluate(options, backend=failing)
    assert [row["id"] for row in read_jsonl(tmp_path / "run" / "predictions.jsonl")] == [
        "random/0",
        "random/1",
    ]

    backend = FakeBackend(answer=answer_dog_no)
    results = evaluate(options, backend=backend)
    assert len(backend.requests) == 4  # only what was missing
    assert results["counts"]["resumed"] == 2
    assert results["counts"]["generated"] == 4
    rows = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert len({row["id"] for row in rows}) == len(rows) == 6
    assert rows[1] == {
        "id": "random/1",
        "answer": "No, there is not.",
        "split": "random",
        "question_id": 1,
        "question": "Is there a dog in the image?",
        "label": "no",
        "image": coco_name(2),
    }
    # Greedy by default; the prompt is the question with LLaVA's short-answer hint.
    request = backend.requests[0]
    assert request.temperature == 0.0
    assert request.max_new_tokens == 128
    assert request.messages[0]["content"].endswith(
        "\nAnswer the question using a single word or phrase."
    )
    assert request.image.size == (64, 64)
    # Every answer is right: accuracy 1 in each split, yes ratio 2/3.
    for split in ("random", "popular", "overall"):
        assert results["metrics"][split]["accuracy"] == 1.0
        assert results["metrics"][split]["yes_ratio"] == pytest.approx(2 / 3)
    assert results["metrics"]["overall"]["n"] == 6
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["metrics"] == results["metrics"]
    assert saved["settings"]["parser"] == "reference"

    # A third run generates nothing.
    idle = FakeBackend(answer=answer_dog_no)
    assert evaluate(options, backend=idle)["counts"]["resumed"] == 6
    assert idle.calls == 0


def test_a_rerun_with_other_settings_is_refused(tmp_path: Path, photo_root: Path) -> None:
    data = pope_data(tmp_path / "pope")
    options = EvalOptions(
        bench="pope", out=tmp_path / "run", data=data, image_root=photo_root, limit=1,
        progress=False,
    )  # fmt: skip
    evaluate(options, backend=FakeBackend())
    options.prompt = "{question} Answer yes or no."
    before = folder_digest(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"other settings: prompt .* → .*--overwrite"):
        evaluate(options, backend=FakeBackend())
    assert folder_digest(tmp_path / "run") == before  # refused: not a byte changed
    options.overwrite = True  # replaces the answers
    assert evaluate(options, backend=FakeBackend())["settings"]["prompt"] == options.prompt

    # Answers scored from a file were not generated here: generating into them is refused.
    scored = EvalOptions(
        bench="pope", out=tmp_path / "scored", data=data, image_root=photo_root, progress=False,
        predictions=tmp_path / "run" / "predictions.jsonl",
    )  # fmt: skip
    assert evaluate(scored)["counts"]["answered"] == 2  # one per split (limit 1)
    scored.predictions = None
    with pytest.raises(ConfigError, match=r"other settings: predictions .* → null"):
        evaluate(scored, backend=FakeBackend())


def test_missing_images_are_skipped_and_counted(tmp_path: Path, photo_root: Path) -> None:
    rows = [
        {"question_id": 0, "image": coco_name(1), "text": "Is there a cat?", "label": "yes"},
        {"question_id": 1, "image": "missing.jpg", "text": "Is there a cat?", "label": "no"},
        {"question_id": 2, "image": "../escape.jpg", "text": "Is there a cat?", "label": "no"},
    ]
    data = write_jsonl(tmp_path / "coco_pope_random.json", rows)
    options = EvalOptions(
        bench="pope", out=tmp_path / "run", data=data, image_root=photo_root, progress=False
    )
    with pytest.raises(BpoError, match="random/1"):
        evaluate(options, backend=FakeBackend())
    options.on_error = "skip"
    results = evaluate(options, backend=FakeBackend())
    assert results["counts"]["answered"] == 1
    assert results["counts"]["unanswered"] == 2
    assert sum(results["counts"]["skipped"].values()) == 2
    skipped = json.loads((tmp_path / "run" / "skipped.json").read_text())
    assert skipped["total"] == 2


def test_cli_scores_existing_predictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = pope_data(tmp_path / "pope") / "coco_pope_random.json"
    # An answer file as LLaVA writes it: question_id and text.
    answers = write_jsonl(
        tmp_path / "answers.jsonl",
        [
            {"question_id": 0, "text": "Yes, there is a person."},
            {"question_id": 1, "text": "I don't think so."},
            {"question_id": 2, "text": "Not that I can see."},
        ],
    )
    out = tmp_path / "scored"
    argv = ["eval", "--bench", "pope", "--data", str(data), "--predictions", str(answers)]
    assert main([*argv, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "random" in table and "parser: reference" in table
    reference = json.loads((out / "results.json").read_text())["metrics"]["random"]
    # reference: yes, yes, yes vs labels yes, no, yes -> TP 2, FP 1; both negations misread
    assert (reference["tp"], reference["fp"], reference["parser_disagreements"]) == (2, 1, 2)
    assert [row["id"] for row in read_jsonl(out / "predictions.jsonl")] == [
        "random/0",
        "random/1",
        "random/2",
    ]

    robust_out = tmp_path / "robust"
    assert main([*argv, "--out", str(robust_out), "--parser", "robust"]) == 0
    robust = json.loads((robust_out / "results.json").read_text())["metrics"]["random"]
    # robust: yes, no, no -> TP 1, TN 1, FN 1
    assert (robust["tp"], robust["tn"], robust["fn"]) == (1, 1, 1)

    capsys.readouterr()
    assert (
        main(["eval", "compare", str(out / "results.json"), str(robust_out / "results.json")]) == 0
    )
    comparison = capsys.readouterr().out
    row = next(line for line in comparison.splitlines() if line.startswith("random.accuracy"))
    # reference accuracy 2/3, robust 2/3: no difference; recall 1.0 -> 0.5: -0.5
    assert row.split() == ["random.accuracy", "0.6667", "0.6667", "+0.0000"]
    recall = next(line for line in comparison.splitlines() if line.startswith("random.recall"))
    assert recall.split() == ["random.recall", "1.0000", "0.5000", "-0.5000"]
    assert 'note: parser differs: scored="reference", robust="robust"' in comparison


def test_scoring_answers_from_elsewhere_never_leaves_them_resumable_as_generated(
    tmp_path: Path, photo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bpo.eval.runner as runner

    data = pope_data(tmp_path / "pope")
    out = tmp_path / "run"
    options = EvalOptions(
        bench="pope", out=out, data=data, image_root=photo_root, batch_size=2, progress=False
    )
    evaluate(options, backend=FakeBackend(answer=answer_dog_no))
    answers = write_jsonl(tmp_path / "answers.jsonl", [{"id": "random/0", "answer": "No."}])

    # Answers from elsewhere do not replace generated ones unless told.
    scoring = EvalOptions(bench="pope", out=out, data=data, predictions=answers, progress=False)
    before = folder_digest(out)
    with pytest.raises(ConfigError, match=r"other settings: .*predictions"):
        evaluate(scoring)
    assert folder_digest(out) == before

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt  # a process stopped while copying the answers in

    monkeypatch.setattr(runner, "_copy_predictions", killed)
    scoring.overwrite = True
    with pytest.raises(KeyboardInterrupt):
        evaluate(scoring)
    # The old answers went (--overwrite), the record was written before the copy, and
    # the copy never landed: a later generation run resumes nothing.
    assert json.loads((out / "settings.json").read_text())["settings"]["predictions"]
    assert not (out / "predictions.jsonl").exists()
    assert evaluate(options, backend=FakeBackend(answer=answer_dog_no))["counts"]["resumed"] == 0


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--bench", "pope", "--out", str(tmp_path)]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert main(["eval", "comprae", "a.json"]) == 2
    assert "unexpected argument 'comprae'" in capsys.readouterr().err
    assert main(["eval"]) == 2
    assert "give --bench and --out" in capsys.readouterr().err
    data = pope_data(tmp_path / "pope")
    assert main(["eval", "--bench", "pope", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["eval", "compare", str(tmp_path / "nothing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    argv = ["eval", "--bench", "pope", "--data", str(data), "--model", "m", "--backend", "openai"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "--base-url" in capsys.readouterr().err


def test_compare_many_files_and_missing_metrics(tmp_path: Path) -> None:
    def results(name: str, metrics: dict[str, Any], bench: str = "chair") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        path = folder / "results.json"
        path.write_text(json.dumps({"bench": bench, "settings": {}, "metrics": metrics}))
        return path

    a = results("base", {"chair_s": 0.5, "captions": 10})
    b = results("bpo", {"chair_s": 0.25, "captions": 10, "extra": 1.0})
    c = results("pope", {"random": {"f1": 0.8}}, bench="pope")
    table = compare_results([a, b, c]).splitlines()
    assert table[0].split() == [
        "metric",
        "base",
        "bpo",
        "pope",
        "bpo",
        "-",
        "base",
        "pope",
        "-",
        "base",
    ]
    assert table[2].split() == ["chair_s", "0.5000", "0.2500", "-", "-0.2500", "-"]
    assert table[3].split() == ["captions", "10", "10", "-", "+0", "-"]
    assert any(line.split()[:2] == ["random.f1", "-"] for line in table)
    assert table[-1] == "note: the files come from different benchmarks: chair, pope"
    assert flatten({"a": {"b": 1, "c": True, "d": "x"}}) == {"a.b": 1}
    with pytest.raises(ConfigError, match="not a bpo eval results file"):
        compare_results([write_jsonl(tmp_path / "x.json", [{"a": 1}])])
