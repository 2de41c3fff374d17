"""DPO runs on the tiny LLaVA and Qwen2-VL: learning, cached reference, losses, resume, export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from bpo.train.callbacks import read_metrics
from bpo.train.run_folder import (
    discard_incomplete_checkpoints,
    is_complete_checkpoint,
    last_checkpoint,
)
from bpo.train.runner import TrainResult, save_final, train
from tests.train.conftest import accelerate_launch, tiny_recipe

STEPS = 4  # recipes/tiny.yaml: 4 steps of 2 pairs, a checkpoint every 2


def _adapter(result: TrainResult) -> dict[str, torch.Tensor]:
    return load_file(str(result.output / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def llava_run(tiny_llava_path, pair_data, train_cache, tmp_path_factory) -> TrainResult:
    """recipes/tiny.yaml on the tiny LLaVA, reference log-probs precomputed."""
    out = tmp_path_factory.mktemp("llava-run")
    return train(tiny_recipe(tiny_llava_path, pair_data, out, train_cache))


def pair_margins(result: TrainResult, beta: float = 0.1) -> torch.Tensor:
    """DPO reward margins of the trained adapter on every training pair, computed by hand.

    margin = beta * ((log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))),
    each log-prob summed over the response tokens; the reference is the base model.
    """
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from bpo.config import load_recipe
    from bpo.train.data import PreferenceCollator, tokenize_pairs
    from bpo.train.model import load_processor

    recipe = load_recipe(result.run_dir / "config.yaml")
    processor = load_processor(recipe.model)
    dataset = tokenize_pairs(recipe, processor).dataset  # from the run's cache
    batch = PreferenceCollator(processor, processor.tokenizer.pad_token_id)(list(dataset))
    model = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(recipe.model.name), str(result.output)
    ).eval()
    inputs = {k: v for k, v in batch.items() if k != "completion_mask"}
    targets, mask = batch["input_ids"][:, 1:], batch["completion_mask"][:, 1:].float()

    def logps() -> torch.Tensor:
        logits = model(**inputs).logits[:, :-1].float()
        per_token = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (per_token * mask).sum(dim=1)

    with torch.no_grad():
        policy = logps()
        with model.disable_adapter():
            reference = logps()
    chosen, rejected = (policy - reference).chunk(2)
    return beta * (chosen - rejected)


def _learned(result: TrainResult) -> None:
    """The adapter moved off its init and the reward margin on the training pairs went up."""
    # PEFT starts LoRA with B = 0: the adapted model is the base model (margin 0) at step 0.
    lora_b = [w for name, w in _adapter(result).items() if "lora_B" in name]
    assert lora_b and all(w.abs().max() > 0 for w in lora_b)
    margins = pair_margins(result)
    assert margins.mean() > 0.01
    assert (margins > 0).float().mean() >= 0.75
    logged = [line["rewards/margins"] for line in read_metrics(result.run_dir / "metrics.jsonl")]
    assert logged[0] == pytest.approx(0.0, abs=1e-4) and logged[-1] > 0


def test_llava_lora_learns_and_writes_a_run(llava_run):
    _learned(llava_run)
    run_dir = llava_run.run_dir
    assert llava_run.global_step == STEPS
    assert (run_dir / "config.yaml").exists() and (
        run_dir / "adapter" / "adapter_config.json"
    ).exists()
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert [line["step"] for line in metrics] == list(range(1, STEPS + 1))
    for key in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
                "learning_rate", "step_time"):  # fmt: skip
        assert all(key in line for line in metrics), key
    result = json.loads((run_dir / "train_result.json").read_text())
    assert result["ranks_agree"] and result["data"]["rows"] == 8
    # Only the language model is adapted: no LoRA weight in the vision tower or projector.
    names = list(_adapter(llava_run))
    assert names and all(".language_model." in name for name in names)


def test_qwen2vl_lora_learns(tiny_qwen2vl_path, pair_data, train_cache, tmp_path):
    result = train(
        tiny_recipe(
            tiny_qwen2vl_path, pair_data, tmp_path / "run", train_cache, "train.max_steps=3"
        )
    )
    _learned(result)


def test_precomputed_reference_matches_the_reference_forward_pass(
    llava_run, tiny_llava_path, pair_data, train_cache, tmp_path
):
    assert llava_run.reference is not None
    recipe = tiny_recipe(
        tiny_llava_path,
        pair_data,
        tmp_path / "run",
        train_cache,
        "train.precompute_reference=false",
    )
    on_the_fly = train(recipe)
    assert on_the_fly.reference is None
    cached = read_metrics(llava_run.run_dir / "metrics.jsonl")
    computed = read_metrics(on_the_fly.run_dir / "metrics.jsonl")
    for ours, theirs in zip(cached, computed, strict=True):
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-4), key
    for name, weight in _adapter(on_the_fly).items():
        torch.testing.assert_close(_adapter(llava_run)[name], weight, rtol=1e-4, atol=1e-6)


def test_loss_types_at_the_first_step(tiny_llava_path, pair_data, train_cache, tmp_path):
    """At step 1 the policy is the reference (log-ratios 0), so each loss has a known value."""

    def first_loss(name: str, *overrides: str) -> float:
        recipe = tiny_recipe(
            tiny_llava_path,
            pair_data,
            tmp_path / name,
            train_cache,
            "train.max_steps=1",
            *overrides,
        )
        train(recipe)
        return float(read_metrics(tmp_path / name / "metrics.jsonl")[0]["loss"])

    beta = 0.1
    # Log-ratios are 0 up to float noise (~1e-5: batches of another shape than the cache's).
    ipo = (1 / (2 * beta)) ** 2
    # (IPO runs TRL's own two-sequence layout, the others the shared-prompt one.)
    ipo_loss = first_loss("ipo", "train.loss_type=ipo", "train.share_prompt=false")
    assert ipo_loss == pytest.approx(ipo, abs=1e-3)
    assert first_loss("hinge", "train.loss_type=hinge") == pytest.approx(1.0, abs=1e-4)
    # RPO: DPO + rpo_alpha x mean NLL of the chosen tokens.
    nll_1 = first_loss("rpo1", "train.loss_type=rpo") - math.log(2)
    nll_2 = first_loss("rpo2", "train.loss_type=rpo", "train.rpo_alpha=2") - math.log(2)
    assert nll_1 > 1.0  # a random model: about ln(vocabulary) per token
    assert nll_2 == pytest.approx(2 * nll_1, rel=1e-4)


class Interrupted(Exception):
    pass


class InterruptAfterLogging(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.step:
            raise Interrupted


def test_resume_continues_from_the_saved_step(
    llava_run, tiny_llava_path, pair_data, train_cache, tmp_path
):
    import shutil

    recipe = tiny_recipe(tiny_llava_path, pair_data, tmp_path / "run", train_cache)
    with pytest.raises(Interrupted):
        train(recipe, callbacks=[InterruptAfterLogging(3)])  # checkpoint-2 saved, step 3 lost
    with pytest.raises(Exception, match="--resume"):
        train(recipe)  # never silently over an existing run
    # A process killed while saving checkpoint-4: transformers writes in place, its
    # trainer_state.json last. get_last_checkpoint would resume this folder.
    checkpoints = tmp_path / "run" / "checkpoints"
    shutil.copytree(checkpoints / "checkpoint-2", checkpoints / "checkpoint-4")
    (checkpoints / "checkpoint-4" / "trainer_state.json").unlink()
    assert last_checkpoint(tmp_path / "run") == str(checkpoints / "checkpoint-2")

    resumed = train(recipe, resume=True)
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    assert resumed.global_step == STEPS
    assert is_complete_checkpoint(checkpoints / "checkpoint-4")  # saved anew
    metrics = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [line["step"] for line in metrics] == list(range(1, STEPS + 1))
    # TRL's token count goes on from the checkpoint's (it restarted from 0 before).
    uninterrupted = read_metrics(llava_run.run_dir / "metrics.jsonl")
    assert [line["num_tokens"] for line in metrics] == [
        line["num_tokens"] for line in uninterrupted
    ]
    # The same weights as the uninterrupted run, to the bit: data order and RNG state were
    # restored, and the reference log-probs come from the same cache.
    assert resumed.weights_digests == llava_run.weights_digests


def test_a_run_killed_after_its_last_checkpoint_resumes_without_another_step(
    tiny_llava_path, pair_data, train_cache, tmp_path
):
    # 2 steps of an 8-pair epoch (4 steps): the last checkpoint is mid-epoch, where
    # transformers 5 resumed with one step too many.
    recipe = tiny_recipe(
        tiny_llava_path, pair_data, tmp_path / "run", train_cache, "train.max_steps=2"
    )
    finished = train(recipe)
    (tmp_path / "run" / "adapter").rename(tmp_path / "killed-before-the-final-save")
    resumed = train(recipe, resume=True)
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-2")
    assert resumed.global_step == 2
    assert resumed.weights_digests == finished.weights_digests
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("checkpoint-*")] == [
        "checkpoint-2"
    ]


def test_the_final_weights_replace_the_old_ones_only_once_saved_whole(tmp_path):
    from types import SimpleNamespace

    final = tmp_path / "adapter"
    final.mkdir()
    (final / "adapter_model.safetensors").write_bytes(b"old")

    class Trainer:
        accelerator = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
        is_fsdp_enabled = False

        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def save_model(self, path: str) -> None:
            (Path(path) / "adapter_model.safetensors").write_bytes(b"new")
            if self.fail:
                raise OSError("disk full")  # as a kill would, midway

    with pytest.raises(OSError, match="disk full"):
        save_final(Trainer(fail=True), final)
    assert (final / "adapter_model.safetensors").read_bytes() == b"old"
    save_final(Trainer(fail=False), final)
    assert (final / "adapter_model.safetensors").read_bytes() == b"new"
    assert [path.name for path in tmp_path.iterdir()] == ["adapter"]  # no staging left


def test_last_checkpoint_passes_over_checkpoints_saved_in_part(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_st'), (6, None), (8, "{}")):
        folder = checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (checkpoints / "checkpoint-x").mkdir()  # not a checkpoint
    assert last_checkpoint(tmp_path) == str(checkpoints / "checkpoint-2")
    discarded = discard_incomplete_checkpoints(tmp_path)
    assert [path.name for path in discarded] == ["checkpoint-4", "checkpoint-6", "checkpoint-8"]
    assert sorted(path.name for path in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-x"]
    assert last_checkpoint(tmp_path / "nothing") is None


def test_merged_export_loads_and_generates(llava_run, tmp_path, photo):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from bpo.cli import main

    assert (
        main(["export", str(llava_run.run_dir), "--merge", "--out", str(tmp_path / "merged")]) == 0
    )
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
    processor = AutoProcessor.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name in merged.state_dict())

    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=[photo], text=[text], return_tensors="pt", add_special_tokens=False)
    base = AutoModelForImageTextToText.from_pretrained(
        json.loads((llava_run.output / "adapter_config.json").read_text())[
            "base_model_name_or_path"
        ]
    )
    adapted = PeftModel.from_pretrained(base, str(llava_run.output))
    with torch.no_grad():
        torch.testing.assert_close(
            merged(**inputs).logits, adapted(**inputs).logits, rtol=1e-4, atol=1e-4
        )
    generated = merged.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4


def test_two_processes_finish_with_the_same_weights(
    llava_run, tiny_llava_path, pair_data, tmp_path
):
    """`accelerate launch` with the shipped DDP config: 2 CPU processes (gloo)."""
    done = accelerate_launch(
        "ddp", tiny_llava_path, pair_data, tmp_path / "run", "train.max_steps=2"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "train_result.json").read_text())
    assert result["global_step"] == 2
    digests = result["weights_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # Two processes of 2 pairs each: 4 pairs per step, so the single-process run's
    # first step (2 pairs) differs, but both moved the adapter the same way.
    margins = [line["rewards/margins"] for line in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert margins[0] == pytest.approx(0.0, abs=1e-4) and margins[-1] > 0


def test_full_finetuning_trains_the_language_model_only(
    tiny_llava_path, pair_data, train_cache, tmp_path
):
    from transformers import AutoModelForImageTextToText

    from bpo.cli import main

    recipe = tiny_recipe(
        tiny_llava_path, pair_data, tmp_path / "run", train_cache,
        "lora.enabled=false", "train.max_steps=2", "train.learning_rate=1e-4",
    )  # fmt: skip
    result = train(recipe)  # the reference comes from the cache; TRL's copy is freed
    assert result.output.name == "model"
    assert main(["export", str(result.run_dir), "--out", str(tmp_path / "out")]) == 0
    before = AutoModelForImageTextToText.from_pretrained(tiny_llava_path).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(tmp_path / "out").state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert any(".language_model." in name for name in changed)
    assert not any("vision_tower" in name or "projector" in name for name in changed)


def test_export_of_a_checkpoint_and_of_the_adapter_alone(llava_run, tmp_path):
    from peft import PeftConfig

    from bpo.cli import main
    from bpo.train.export import export_run

    adapter = tmp_path / "adapter"
    assert main(["export", str(llava_run.run_dir), "--checkpoint", "2", "--out", str(adapter)]) == 0
    assert PeftConfig.from_pretrained(str(adapter)).r == 8
    assert not any(p.name.startswith("optimizer") for p in adapter.iterdir())
    step2 = _adapter_at(adapter)
    assert any(not torch.equal(step2[name], w) for name, w in _adapter(llava_run).items())
    with pytest.raises(Exception, match="not empty"):
        export_run(llava_run.run_dir, adapter)
    assert (
        main(["export", str(llava_run.run_dir), "--checkpoint", "9", "--out", str(tmp_path / "x")])
        == 2
    )


def _adapter_at(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def test_reference_pass_resumes_where_it_stopped(llava_run, tiny_llava_path, pair_data, tmp_path):
    import shutil

    assert llava_run.reference is not None
    cached = Path(llava_run.reference["folder"])
    cache = tmp_path / "cache"
    folder = cache / cached.name  # same data and model: the same key in another cache
    shutil.copytree(cached, folder)
    store = folder / "reference_logps.jsonl"
    lines = store.read_text().splitlines()
    # A pass killed after 3 rows, in the middle of the 4th line.
    store.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])
    (folder / "done.json").unlink()

    result = train(
        tiny_recipe(tiny_llava_path, pair_data, tmp_path / "run", cache, "train.max_steps=1")
    )
    assert result.reference is not None and result.reference["folder"] == str(folder)
    assert not result.reference["reused"] and (folder / "done.json").exists()
    resumed = store.read_text().splitlines()
    assert resumed[:3] == lines[:3]  # kept, not recomputed
    # Row 3 was computed again in the batch it had before (rows 0-3), with the same
    # padding: the same bits as the uninterrupted pass.
    assert sorted(resumed) == sorted(lines) and len(lines) == 8
