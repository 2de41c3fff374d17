"""DeepSpeed ZeRO-2 and ZeRO-3 with the shipped configs on 2 CPU processes, against 1 process.

DeepSpeed's CPU accelerator talks over gloo when oneCCL's bindings are absent, and builds
its shared-memory op (``deepspeed_shm_comm_op``) with the system compiler on first use
(~45 s, cached in ``~/.cache/torch_extensions``). The configs ask for bf16; the runs here
are float32 (``--mixed_precision no``) so that they can be compared with 1 process.
Needs ``pip install deepspeed`` (not a dependency of bpo); run with ``--runslow``.
"""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from bpo.train.callbacks import read_metrics
from tests.train.conftest import LOSS_TOLERANCE, accelerate_launch

pytest.importorskip("deepspeed")


@pytest.mark.slow  # ~20 s a stage, once the shared-memory op is built
@pytest.mark.parametrize("config", ["zero2", "zero3"])
def test_zero_lora_matches_one_process(
    one_process_run, tiny_llava_path, pair_data, tmp_path, config
):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    run = tmp_path / "run"
    # Its own cache: the reference pass runs under DeepSpeed (ZeRO-3: an inference engine).
    done = accelerate_launch(
        config, tiny_llava_path, pair_data, run, f"data.cache_dir={tmp_path / 'cache'}",
        launch_args=("--mixed_precision", "no"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run / "train_result.json").read_text())
    assert result["global_step"] == 4

    metrics = read_metrics(run / "metrics.jsonl")
    reference = read_metrics(one_process_run.run_dir / "metrics.jsonl")
    assert [line["step"] for line in metrics] == [1, 2, 3, 4]
    for zero_line, single_line in zip(metrics, reference, strict=True):
        assert zero_line["loss"] == pytest.approx(single_line["loss"], abs=LOSS_TOLERANCE)
    # The adapter gathered for saving (ZeRO-3 shards it) is the 1-process one.
    saved = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    expected = load_file(str(one_process_run.output / "adapter_model.safetensors"))
    assert saved.keys() == expected.keys()
    for name, weight in expected.items():
        assert saved[name].shape == weight.shape
        assert (saved[name] - weight).abs().max() < 1e-5, name
    PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(tiny_llava_path), str(run / "adapter")
    )
