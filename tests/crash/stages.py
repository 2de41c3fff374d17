"""The stages the kill -9 harness crashes, on one small workspace of real photos.

Shared by the tests (`tests/crash/test_kill_resume.py`) and the benchmark
(`bench/crash.py`). Every stage is the real command on the tiny random LLaVA of
`bpo.tiny_models`, sized to take a few seconds on a CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.bootstrap.conftest import write_dataset
from tests.crash.harness import Stage, bpo_command

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

SAMPLES = 24
# Text-only negatives per sample for `bpo pairs --mix`: enough pairs (4,800 at 24 samples)
# that writing them takes longer than the harness's 10 ms poll.
MANY_NEGATIVES = 200
# A wrong answer of the kind BPO trains away (objects that co-occur, not in the photo).
REJECTED = "A dog and a red car stand next to the dining table with a fork."


@dataclass(frozen=True)
class Workspace:
    """The inputs of every stage.

    Attributes:
        model: the tiny LLaVA checkpoint.
        samples, images: samples (`SAMPLES` by default) over crops of skimage photos.
        negatives: cooccurrence negatives of the samples (for `bpo pairs`).
        many_negatives: `MANY_NEGATIVES` per sample, in two strategies (for ``--mix``).
        pairs: one pair per sample (for `bpo train`).
        chair: CHAIR records over the same images (for `bpo eval`).
    """

    model: Path
    samples: Path
    images: Path
    negatives: Path
    many_negatives: Path
    pairs: Path
    chair: Path


def build_workspace(root: Path, model: Path, *, samples: int = SAMPLES) -> Workspace:
    """Write the inputs under `root` for `samples` samples (the model is built elsewhere)."""
    from bpo.bootstrap.cooccurrence import CooccurrenceInjector
    from bpo.bootstrap.runner import run_bootstrap

    samples_path = write_dataset(root / "data", samples)
    images = samples_path.parent / "images"
    negatives = root / "negatives.jsonl"
    run_bootstrap(samples_path, CooccurrenceInjector(), negatives, num_negatives=3, progress=False)
    rows = [json.loads(line) for line in samples_path.read_text().splitlines()]
    many_negatives = root / "many_negatives.jsonl"
    with many_negatives.open("w") as handle:
        for row in rows:
            for k in range(MANY_NEGATIVES):
                strategy = ("cooccurrence", "llm-injection")[k % 2]
                negative = {
                    "id": f"{row['id']}/{strategy}/{k}",
                    "sample_id": row["id"],
                    "strategy": strategy,
                    "text": f"{REJECTED} And {k} cups.",
                    "params": {"seed": k},
                }
                handle.write(json.dumps(negative) + "\n")
    pairs = root / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"{row['id']}/pair",
                    "image": row["image"],
                    "prompt": row["prompt"],
                    "chosen": row["response"],
                    "rejected": REJECTED,
                    "strategy": "llm-injection",
                }
            )
            + "\n"
            for row in rows
        )
    )
    chair = root / "chair.jsonl"
    chair.write_text(
        "".join(
            json.dumps({"id": f"c{i}", "image": row["image"], "objects": ["person", "cat"]}) + "\n"
            for i, row in enumerate(rows)
        )
    )
    return Workspace(model, samples_path, images, negatives, many_negatives, pairs, chair)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _nonempty(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def _reference_store(out: Path) -> Path | None:
    found = sorted((out / "run" / "cache").glob("reference-*/reference_logps.jsonl"))
    return found[0] if found else None


def stages(space: Workspace) -> dict[str, Stage]:
    """Every stage of item 1 of issue 8 but `bpo export` (crashed by its own tests)."""

    def bootstrap(out: Path) -> list[str]:
        return bpo_command(
            *("bootstrap", space.samples, "--strategy", "image-weakening"),
            *("--model", space.model, "--image-root", space.images),
            *("--out", out / "negatives.jsonl", "--batch-size", "2"),
            *("--max-new-tokens", "6", "--temperature", "0", "--no-progress"),
        )

    def pairs(out: Path) -> list[str]:
        return bpo_command(
            *("pairs", space.samples, space.negatives, "--out", out / "pairs.jsonl"),
            *("--image-root", space.images, "--export", "trl", "bpo", "llamafactory"),
        )

    def pairs_mix(out: Path) -> list[str]:
        return bpo_command(
            *("pairs", space.samples, space.many_negatives, "--out", out / "pairs.jsonl"),
            *("--mix", "cooccurrence=1", "llm-injection=1"),
        )

    def train(out: Path) -> list[str]:
        # The same command for the killed run and the rerun: --resume starts from scratch
        # when there is no checkpoint. One pair per reference forward pass, so the pass
        # takes long enough to be killed in the middle.
        return bpo_command(
            *("train", "--config", RECIPES / "tiny.yaml", f"model.name={space.model}"),
            *(f"data.pairs={space.pairs}", f"data.image_root={space.images}"),
            *("train.reference_batch_size=1", "--output-dir", out / "run", "--resume"),
        )

    def evaluate(out: Path) -> list[str]:
        return bpo_command(
            *("eval", "--bench", "chair", "--data", space.chair, "--image-root", space.images),
            *("--model", space.model, "--out", out / "eval", "--batch-size", "2"),
            *("--max-new-tokens", "6", "--no-progress"),
        )

    def pipeline(out: Path) -> list[str]:
        return bpo_command(
            *("run", RECIPES / "tiny.yaml", f"model.name={space.model}"),
            *(f"samples.path={space.samples}", f"samples.image_root={space.images}"),
            *("bootstrap.batch_size=4", "bootstrap.max_new_tokens=6", f"eval.chair={space.chair}"),
            *("eval.max_new_tokens=6", "eval.batch_size=4", "--out", out / "run", "--no-progress"),
        )

    def reference_started(out: Path) -> bool:
        store = _reference_store(out)
        return store is not None and _nonempty(store)

    def reference_finished(out: Path) -> bool:
        store = _reference_store(out)
        return store is not None and (store.parent / "done.json").exists()

    return {
        "bootstrap": Stage(
            "bootstrap",
            bootstrap,
            started=lambda out: _nonempty(out / "negatives.jsonl"),
            finished=lambda out: (out / "negatives.jsonl.summary.json").exists(),
            ready=lambda out: _lines(out / "negatives.jsonl.log.jsonl") >= 6,
        ),
        "pairs": Stage(
            "pairs",
            pairs,
            started=lambda out: _nonempty(out / "pairs.jsonl"),
            finished=lambda out: (out / "dataset_info.json").exists(),
            # Killed in the TRL export (a dataset folder, then a parquet file), after the
            # pairs file: the datasets cache is hidden, the staging folder too.
            ready=lambda out: (out / ".pairs_trl.cache").exists(),
        ),
        "pairs-mix": Stage(
            "pairs-mix",
            pairs_mix,
            started=lambda out: _nonempty(out / "pairs.jsonl"),
            finished=lambda out: (out / "pairs.jsonl.skipped.json").exists(),
            # Killed while appending the pairs (after the hidden spill of the candidates).
            ready=lambda out: _lines(out / "pairs.jsonl") >= 1000,
        ),
        "reference": Stage(
            "reference",
            train,
            started=reference_started,
            finished=reference_finished,
            ready=lambda out: (store := _reference_store(out)) is not None and _lines(store) >= 3,
            command="train",
        ),
        "train": Stage(
            "train",
            train,
            started=lambda out: _nonempty(out / "run" / "metrics.jsonl"),
            finished=lambda out: (out / "run" / "train_result.json").exists(),
            # Step 3 logged: checkpoint-2 is saved, step 4 and checkpoint-4 are under way.
            ready=lambda out: _lines(out / "run" / "metrics.jsonl") >= 3,
        ),
        "eval": Stage(
            "eval",
            evaluate,
            started=lambda out: _nonempty(out / "eval" / "predictions.jsonl"),
            finished=lambda out: (out / "eval" / "skipped.json").exists(),
            ready=lambda out: _lines(out / "eval" / "predictions.jsonl") >= 6,
        ),
        "pipeline": Stage(
            "pipeline",
            pipeline,
            started=lambda out: any((out / "run").glob("negatives/*.jsonl")),
            finished=lambda out: (out / "run" / "report.html").exists(),
            # Mid-training: bootstrap and pairs are marked done and are skipped on the rerun.
            ready=lambda out: _nonempty(out / "run" / "train" / "metrics.jsonl"),
            # The report shows when it was made; the harness checks it is whole.
            skip=lambda rel: rel == "run/report.html",
        ),
    }
