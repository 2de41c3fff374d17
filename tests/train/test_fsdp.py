"""FSDP2 with recipes/accelerate/fsdp.yaml on 2 CPU processes (gloo), against 1 process.

The 2-process runs go through `tests.train.fsdp_on_cpu` (accelerate's CPU gate on FSDP
lifted, see there); everything else is the shipped config and `bpo train` as launched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bpo.train.callbacks import read_metrics
from bpo.train.reference import STORE_NAME
from bpo.train.runner import train
from tests.train.conftest import LOSS_TOLERANCE, accelerate_launch, tiny_recipe

FSDP_ENTRY = "tests.train.fsdp_on_cpu"


def _result(run: Path) -> dict:
    return json.loads((run / "train_result.json").read_text())


def _reference_logps(folder: Path) -> dict[str, tuple[float, float]]:
    rows = [json.loads(line) for line in (folder / STORE_NAME).read_text().splitlines()]
    return {row["id"]: (row["ref_chosen_logps"], row["ref_rejected_logps"]) for row in rows}


def test_fsdp_lora_matches_one_process_resumes_and_exports(
    one_process_run, tiny_llava_path, pair_data, tmp_path
):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    from bpo.cli import main

    single = one_process_run
    run = tmp_path / "fsdp"
    # Its own cache: the reference pass runs under the FSDP launch, each process on its rows.
    done = accelerate_launch(
        "fsdp", tiny_llava_path, pair_data, run, f"data.cache_dir={tmp_path / 'cache'}",
        entry=FSDP_ENTRY,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = _result(run)
    assert result["global_step"] == 4 and result["ranks_agree"]

    assert single.reference is not None and result["reference"] is not None
    expected = _reference_logps(Path(single.reference["folder"]))
    computed = _reference_logps(Path(result["reference"]["folder"]))
    assert computed.keys() == expected.keys() and len(computed) == 8
    for row, values in computed.items():  # measured 1.5e-5: one float32 step at -190
        assert values == pytest.approx(expected[row], abs=1e-4)

    metrics = read_metrics(run / "metrics.jsonl")
    reference = read_metrics(single.run_dir / "metrics.jsonl")
    assert [line["step"] for line in metrics] == [1, 2, 3, 4]
    for fsdp_line, single_line in zip(metrics, reference, strict=True):
        assert fsdp_line["loss"] == pytest.approx(single_line["loss"], abs=LOSS_TOLERANCE)
        assert fsdp_line["rewards/margins"] == pytest.approx(
            single_line["rewards/margins"], abs=LOSS_TOLERANCE
        )
    assert metrics[-1]["loss"] < metrics[0]["loss"] - 0.03  # it learned: 0.693 -> 0.631

    # Stopped after checkpoint-2 (checkpoint-4 and the final adapter never written),
    # then resumed under FSDP: steps 3 and 4 again, to the uninterrupted run's weights.
    uninterrupted = tmp_path / "uninterrupted"
    shutil.copytree(run, uninterrupted)
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")
    shutil.rmtree(run / "adapter")
    (run / "train_result.json").unlink()
    done = accelerate_launch(
        "fsdp", tiny_llava_path, pair_data, run, f"data.cache_dir={tmp_path / 'cache'}",
        "--resume", entry=FSDP_ENTRY,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = _result(run)
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["global_step"] == 4
    assert resumed["weights_digests"] == _result(uninterrupted)["weights_digests"]
    resumed_metrics = read_metrics(run / "metrics.jsonl")
    assert [line["loss"] for line in resumed_metrics] == pytest.approx(
        [line["loss"] for line in metrics], abs=1e-6
    )

    # The adapter saved under FSDP is a plain PEFT adapter; export merges it.
    assert main(["export", str(run), "--merge", "--out", str(tmp_path / "merged")]) == 0
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name in merged.state_dict())
    adapted = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(tiny_llava_path), str(run / "adapter")
    ).merge_and_unload()
    for name, weight in adapted.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[name], weight)
    lora_b = [w for name, w in load_file(str(run / "adapter" / "adapter_model.safetensors")).items()
              if "lora_B" in name]  # fmt: skip
    assert lora_b and all(w.abs().max() > 0 for w in lora_b)  # PEFT starts B at 0
    assert main(["export", str(run), "--checkpoint", "2", "--out", str(tmp_path / "step2")]) == 0


@pytest.mark.slow  # ~40 s
def test_fsdp_full_finetuning_matches_one_process(
    tiny_llava_path, pair_data, train_cache, tmp_path
):
    """The output layer trains too: gathered before TRL's fused head reads it (distributed)."""
    from safetensors.torch import load_file

    from bpo.cli import main

    full = ("lora.enabled=false", "train.learning_rate=1e-4")
    single = train(
        tiny_recipe(
            tiny_llava_path, pair_data, tmp_path / "single", train_cache,
            "train.gradient_accumulation_steps=2", *full,
        )
    )  # fmt: skip
    run = tmp_path / "fsdp"
    done = accelerate_launch(
        "fsdp", tiny_llava_path, pair_data, run, f"data.cache_dir={tmp_path / 'cache'}",
        *full, entry=FSDP_ENTRY,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(run / "metrics.jsonl")
    reference = read_metrics(single.run_dir / "metrics.jsonl")
    for fsdp_line, single_line in zip(metrics, reference, strict=True):
        assert fsdp_line["loss"] == pytest.approx(single_line["loss"], abs=LOSS_TOLERANCE)
        # Without the gather: 3.45 against 3.13 at step 1 (lm_head's own gradients).
        assert fsdp_line["grad_norm"] == pytest.approx(single_line["grad_norm"], rel=1e-4)
    base = load_file(str(tiny_llava_path / "model.safetensors"))
    trained = load_file(str(run / "model" / "model.safetensors"))
    expected = load_file(str(single.output / "model.safetensors"))
    assert trained.keys() == expected.keys()
    for name, weight in expected.items():  # measured 1e-6
        assert (trained[name] - weight).abs().max() < 1e-5, name
    assert not torch.equal(
        trained["language_model.lm_head.weight"], base["language_model.lm_head.weight"]
    )
    assert all(torch.equal(trained[name], base[name]) for name in base if "vision_tower" in name)
    assert main(["export", str(run), "--out", str(tmp_path / "out")]) == 0


@pytest.mark.slow  # ~20 s: two processes start to refuse
def test_fsdp_on_cpu_without_the_gate_lifted_is_refused(tiny_llava_path, pair_data, tmp_path):
    """As shipped, accelerate would train these CPU processes unsharded (plain DDP)."""
    done = accelerate_launch(
        "fsdp", tiny_llava_path, pair_data, tmp_path / "run", "train.max_steps=1"
    )
    assert done.returncode != 0
    assert "asks for FSDP, but accelerate set these processes up as MULTI_CPU" in done.stderr
    assert not (tmp_path / "run").exists()  # refused before the run folder is written


def test_export_refuses_a_sharded_fsdp_checkpoint(tiny_llava_path, pair_data, tmp_path):
    from bpo.config import save_recipe
    from bpo.errors import ConfigError
    from bpo.train.export import export_run

    # The layout fsdp_state_dict_type: SHARDED_STATE_DICT leaves (a 2-process run, checked
    # by hand): torch.distributed.checkpoint folders, no adapter or config.json.
    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "checkpoint-2"
    (checkpoint / "pytorch_model_fsdp_0").mkdir(parents=True)
    (checkpoint / "pytorch_model_fsdp_0" / ".metadata").write_bytes(b"")
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2}')
    save_recipe(tiny_recipe(tiny_llava_path, pair_data, run, None), run / "config.yaml")
    with pytest.raises(ConfigError, match=r"sharded weights .* \(leave out --checkpoint"):
        export_run(run, tmp_path / "out", checkpoint="2")
    assert not (tmp_path / "out").exists()
