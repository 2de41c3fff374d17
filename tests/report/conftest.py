"""A tiny run directory, made with the real stages' code where it runs on a CPU in a blink.

Samples and negatives are written by hand (with real photos from skimage and a
real distortion provenance from `bpo.distort.describe`); pairs and their stats
come from `bpo.pairs.build_pairs`, evaluation results from `bpo eval` scoring
prediction files; training metrics are lines as `MetricsLogger` writes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bpo.cli import main
from bpo.data.records import negative_id
from bpo.distort import describe
from bpo.pairs import build_pairs

# A rejected answer a hostile dataset could carry: the page must show it as text.
HOSTILE = 'A rocket <script>alert("x")</script><img src=x onerror=alert(1)> on a pad & a tower.'

SAMPLES = [
    ("s-astronaut", "astronaut", "Describe the image.",
     "A woman in a white space suit smiles in front of an American flag, holding a helmet."),
    ("s-chelsea", "chelsea", "What animal is in the picture?",
     "A ginger tabby cat with green eyes looks to the left."),
    ("s-coffee", "coffee", "Describe the table.",
     "A cup of coffee on a saucer sits on a wooden table, with a spoon beside it."),
    ("s-rocket", "rocket", "What is shown?", "A rocket stands on its launch pad under a blue sky."),
]  # fmt: skip

IMAGE_WEAKENING = {
    "s-astronaut": "A man in a space suit stands on the moon next to a lunar rover.",
    "s-chelsea": "A cat and a dog sleep on a sofa next to a remote.",
    "s-coffee": "A cup of coffee on a saucer sits on a wooden table, with a fork and a knife.",
    "s-rocket": "A rocket stands on its launch pad under a blue sky.",  # identical: dropped
}
COOCCURRENCE = {
    "s-astronaut": "A woman in a white space suit smiles in front of an American flag, holding a "
    "helmet and a surfboard.",
    "s-chelsea": "A ginger tabby cat with green eyes looks at a mouse and a bowl.",
    "s-coffee": "",  # empty: dropped
    "s-rocket": HOSTILE,
}

POPE_QUESTIONS = [
    ("chelsea.png", "cat", "yes"), ("coffee.png", "cup", "yes"), ("coffee.png", "spoon", "yes"),
    ("chelsea.png", "dog", "no"), ("coffee.png", "fork", "no"), ("rocket.png", "person", "no"),
]  # fmt: skip
POPE_ANSWERS = {
    "base": ["Yes."] * 6,
    "bpo": ["Yes.", "Yes.", "No.", "No.", "No.", "Yes."],
}


def write_jsonl(path: Path, rows: Sequence[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def edit_results(run: Path, folder: str, edit: dict[str, float | None]) -> None:
    """Set dotted metrics of ``eval/<folder>/results.json`` (``"random.yes_ratio": 0.9``)."""
    path = run / "eval" / folder / "results.json"
    results = json.loads(path.read_text())
    for dotted, value in edit.items():
        *parents, last = dotted.split(".")
        target = results["metrics"]
        for part in parents:
            target = target[part]
        target[last] = value
    path.write_text(json.dumps(results))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, photo_by_name: Any) -> Path:
    """A run directory with every stage: samples, negatives, pairs, metrics, and the base
    and BPO models' CHAIR and POPE evaluations, named as `bpo run` names them."""
    run = tmp_path_factory.mktemp("run")
    images = run / "data" / "images"
    images.mkdir(parents=True)
    samples = []
    for sample_id, photo, question, answer in SAMPLES:
        image = photo_by_name(photo)
        # The rocket stays tiny, as the toy world's 48 px scenes are.
        image.thumbnail((48, 48) if photo == "rocket" else (320, 320))
        image.save(images / f"{photo}.png")
        samples.append(
            {
                "id": sample_id,
                "image": f"{photo}.png",
                "prompt": [{"role": "user", "content": question}],
                "response": answer,
            }
        )
    write_jsonl(run / "data" / "samples.jsonl", samples)
    weakening = [
        {
            "id": negative_id(sample_id, "image-weakening", 0),
            "sample_id": sample_id,
            "strategy": "image-weakening",
            "text": text,
            "params": {
                "model": "tiny-llava",
                "distortion": describe("diffusion", {"step": 700}, seed=index),
                "temperature": 1.0,
            },
        }
        for index, (sample_id, text) in enumerate(IMAGE_WEAKENING.items())
    ]
    cooccurrence = [
        {
            "id": negative_id(sample_id, "cooccurrence", 0),
            "sample_id": sample_id,
            "strategy": "cooccurrence",
            "text": text,
            "params": {"source": "cooccurrence", "added": ["surfboard"]},
        }
        for sample_id, text in COOCCURRENCE.items()
    ]
    negatives = [
        write_jsonl(run / "negatives" / "image_weakening.jsonl", weakening),
        write_jsonl(run / "negatives" / "cooccurrence.jsonl", cooccurrence),
    ]
    build_pairs(run / "data" / "samples.jsonl", negatives, run / "pairs.jsonl")
    write_jsonl(
        run / "train" / "metrics.jsonl",
        [
            {
                "step": step,
                "epoch": step / 10,
                "loss": 0.6931 * 0.85**step,
                "rewards/margins": 0.12 * step,
                "rewards/accuracies": min(1.0, 0.5 + 0.06 * step),
                # The rejected answers drop fast, the chosen ones a little too (displacement).
                "logps/chosen": -40.0 - 0.5 * step,
                "logps/rejected": -60.0 - 4.0 * step,
                "grad_norm": 3.0 / step,
                "learning_rate": 5e-6 * min(1.0, step / 4),  # a warm-up
            }
            for step in range(1, 11)
        ],
    )
    chair_data = write_jsonl(
        run / "chair.jsonl",
        [
            {"id": "c-chelsea", "image": "chelsea.png", "objects": ["cat"]},
            {"id": "c-coffee", "image": "coffee.png", "objects": ["cup", "spoon", "dining table"]},
        ],
    )
    answers = {
        "base": {
            "c-chelsea": "A cat sits on a couch next to a dog and a remote.",
            "c-coffee": "A cup of coffee with a fork and a knife on a dining table.",
        },
        "bpo": {
            "c-chelsea": "A cat looks to the left.",
            "c-coffee": "A cup of coffee and a spoon on a dining table.",
        },
    }
    for name, by_id in answers.items():
        predictions = write_jsonl(
            tmp_path_factory.mktemp("answers") / "answers.jsonl",
            [{"id": item_id, "answer": text} for item_id, text in by_id.items()],
        )
        argv = ["eval", "--bench", "chair", "--data", str(chair_data)]
        out = run / "eval" / f"{name}-chair"
        assert main([*argv, "--predictions", str(predictions), "--out", str(out)]) == 0
    # One POPE split: the base model says yes to everything (yes-ratio 1.0), the BPO
    # model answers 4 of 6 right with a yes-ratio of 0.5.
    questions = [
        {"question_id": i, "image": image, "text": f"Is there a {thing} in the image?",
         "label": label}
        for i, (image, thing, label) in enumerate(POPE_QUESTIONS)
    ]  # fmt: skip
    pope_data = write_jsonl(tmp_path_factory.mktemp("pope") / "coco_pope_random.json", questions)
    for name, said in POPE_ANSWERS.items():
        predictions = write_jsonl(
            tmp_path_factory.mktemp("answers") / "answers.jsonl",
            [{"id": f"random/{i}", "answer": text} for i, text in enumerate(said)],
        )
        argv = ["eval", "--bench", "pope", "--data", str(pope_data)]
        out = run / "eval" / f"{name}-pope"
        assert main([*argv, "--predictions", str(predictions), "--out", str(out)]) == 0
    return run
