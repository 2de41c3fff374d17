"""HallusionBench: answers read by both rules, aAcc/fAcc/qAcc by hand, its own and lmms-eval's files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bpo.eval.hallusion import correctness, read_reference, read_robust
from bpo.eval.runner import EvalOptions, evaluate
from tests.eval.conftest import FakeBackend, coco_name, read_jsonl, write_jsonl


def record(category: str, visual_input: str, figure: str, question: str, gt: str) -> dict[str, Any]:
    sub = "illusion" if category == "VD" else "chart"
    return {
        "category": category, "subcategory": sub, "visual_input": visual_input, "set_id": "0",
        "figure_id": figure, "sample_note": "x", "question_id": question,
        "question": f"{category} question {question} on figure {figure}?",
        "gt_answer_details": "...", "gt_answer": gt,
        "filename": None if visual_input == "0" else f"./{coco_name(int(figure) + 1)}",
    }  # fmt: skip


RECORDS = [
    record("VD", "1", "0", "0", "1"),
    record("VD", "2", "1", "0", "0"),
    record("VD", "1", "0", "1", "0"),
    record("VS", "0", "0", "0", "0"),  # no image: "the model does not know" is right
    record("VS", "1", "1", "0", "0"),
    record("VS", "2", "2", "0", "1"),
]
ANSWERS = [
    "Yes, they are the same size.",  # yes, gt yes: right
    "Yes.",  # gt no: wrong
    "No, the eyes deceive you.",  # "eyes" holds "yes": yes to the reference (wrong); robust no
    "I cannot determine this without the chart.",  # no "yes": no (right); robust unclear (right)
    "No.",  # gt no: right
    "Not sure.",  # reference no (gt yes: wrong); robust unclear: wrong with a figure
]


@pytest.mark.parametrize(
    ("answer", "reference", "robust"),
    [
        ("Yes", "1", "1"),
        ("yes.", "1", "1"),
        ("No, it is not.", "0", "0"),
        ("I see two eyes.", "1", "1"),  # reference: "yes" inside "eyes"; robust: no negation
        ("There is no cat.", "0", "0"),
        ("", "0", "1"),  # empty: no "yes" (reference); robust's default is yes
        ("It is unclear from the image.", "0", "2"),
        ("**No**, they differ.", "0", "0"),
    ],
)
def test_answer_reading(answer: str, reference: str, robust: str) -> None:
    assert read_reference(answer) == reference
    assert read_robust(answer) == robust


def test_scores_by_hand(tmp_path: Path) -> None:
    # HallusionBench's result file: the questions with "model_prediction".
    results_file = tmp_path / "HallusionBench_result.json"
    results_file.write_text(
        json.dumps([{**r, "model_prediction": a} for r, a in zip(RECORDS, ANSWERS, strict=True)])
    )
    out = evaluate(
        EvalOptions(bench="hallusion", out=tmp_path / "ref", predictions=results_file,
                    progress=False)
    )  # fmt: skip
    metrics = out["metrics"]
    # Right: 1 0 0 1 1 0.
    assert metrics["overall"]["aAcc"] == pytest.approx(3 / 6)
    # Figures (VS figure 0 has none): VD_0_0 {right, wrong}, VD_0_1 {wrong}, VS_0_1 {right},
    # VS_0_2 {wrong} -> 1 of 4 all right.
    assert metrics["overall"]["fAcc"] == pytest.approx(1 / 4)
    assert metrics["overall"]["figures"] == 4
    # Question pairs: VD q0 {right, wrong}, VD q1 {wrong}, VS q0 {right, right, wrong}: 0 of 3.
    assert metrics["overall"]["qAcc"] == 0.0
    # Easy (visual_input != 2): VD q0 {right}, VD q1 {wrong}, VS q0 {right, right} -> 2/3;
    # hard: VD q0 {wrong}, VS q0 {wrong} -> 0/2.
    assert metrics["overall"]["easy_aAcc"] == pytest.approx(2 / 3)
    assert metrics["overall"]["hard_aAcc"] == 0.0
    assert metrics["VD"]["aAcc"] == pytest.approx(1 / 3)
    assert metrics["VS"]["aAcc"] == pytest.approx(2 / 3)
    assert metrics["unclear"] == 0
    assert metrics["parser_disagreements"] == 1  # the "eyes" answer

    robust = evaluate(
        EvalOptions(bench="hallusion", out=tmp_path / "robust", predictions=results_file,
                    parser="robust", progress=False)
    )["metrics"]  # fmt: skip
    # Right: 1 0 1 1 1 0 (the "eyes" answer now reads no; "Not sure." is unclear).
    assert robust["overall"]["aAcc"] == pytest.approx(4 / 6)
    assert robust["overall"]["fAcc"] == pytest.approx(2 / 4)  # VD_0_0 now all right
    assert robust["unclear"] == 2
    codes = [q["correctness"] for q in
             json.loads((tmp_path / "robust" / "results.json").read_text())["details"]["questions"]]  # fmt: skip
    assert codes == ["1", "0", "1", "2", "1", "2"]
    assert correctness("Not sure.", "1", "robust") == "2"


def test_generation_and_lmms_eval_samples(tmp_path: Path, photo_root: Path) -> None:
    data = tmp_path / "HallusionBench.json"
    data.write_text(json.dumps(RECORDS))
    model = FakeBackend(answer=lambda request: "No")
    out = evaluate(
        EvalOptions(bench="hallusion", out=tmp_path / "run", data=data, image_root=photo_root,
                    progress=False),
        backend=model,
    )  # fmt: skip
    # The VS question without a figure is asked without an image.
    assert [request.image is None for request in model.requests] == [
        False, False, False, True, False, False,
    ]  # fmt: skip
    assert model.requests[0].max_new_tokens == 128
    assert read_jsonl(tmp_path / "run" / "predictions.jsonl")[3]["id"] == (
        "hallusion/VS_chart_0_0_0"
    )
    # "No" to everything: right where gt is 0 (questions 2, 3, 4, 5) -> 4/6.
    assert out["metrics"]["overall"]["aAcc"] == pytest.approx(4 / 6)

    # lmms-eval's logged samples (--log_samples) of hallusion_bench_image, out of order.
    samples = [
        {"doc_id": i, "doc": {k: v for k, v in r.items() if k != "filename"},
         "target": r["gt_answer"], "resps": [[a]], "filtered_resps": [a]}
        for i, (r, a) in enumerate(zip(RECORDS, ANSWERS, strict=True))
    ][::-1]  # fmt: skip
    logged = write_jsonl(tmp_path / "hallusion_bench_image.jsonl", samples)
    scored = evaluate(
        EvalOptions(bench="hallusion", out=tmp_path / "lmms", data=data, predictions=logged,
                    progress=False)
    )  # fmt: skip
    assert scored["counts"]["answered"] == 6
    assert scored["metrics"]["overall"]["aAcc"] == pytest.approx(3 / 6)  # as test_scores_by_hand
