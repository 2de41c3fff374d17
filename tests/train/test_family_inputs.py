"""Every family: the log-probs bpo trains on equal a plain forward pass on the processor's output.

"Trains on": TRL's per-sequence log-probs of the collated batch, through the trainer's
own call (`BpoDPOTrainer.reference_logps`, i.e. `DPOTrainer.compute_ref_log_probs`:
the model call and the sum over the completion mask that its loss makes for the
policy), and the per-token log-probs of that model call. "Plain": ``processor(text=prompt + response, images=[image])`` (PaliGemma:
``suffix=response``), everything it returns passed to the model, the log-softmax summed
over the response tokens. Three pairs per batch, on photos of three sizes and shapes
(Pixtral rounds sizes to its patches, InternVL and Idefics3 tile, LLaVA-NeXT and Qwen
resize by aspect), one with a multi-turn prompt: padding, several image layouts in one
batch and the repeated image inputs of the rejected half are covered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bpo import processing
from bpo.tiny_models import available_arches
from bpo.train.data import PreferenceCollator, tokenize_pairs
from tests.train.conftest import PHOTOS, PairData, tiny_recipe, write_pairs

SIZES = {"astronaut": (64, 48), "chelsea": (72, 40), "coffee": (40, 90), "rocket": (64, 48)}
ROWS = (0, 5, 6)  # astronaut, chelsea, and the multi-turn prompt on coffee
# fp32: 1e-5 per token; per sequence, plus two steps of float32 at the sum's size (a sum
# near -180 is a multiple of 1.5e-5 in float32: two exact computations may differ by that).
TOLERANCE = 1e-5
FLOAT32_STEP = torch.finfo(torch.float32).eps
PACKED_ARCHES = ("llava", "qwen2-vl")  # what bpo.train.shared_prompt supports today


@pytest.fixture(scope="module")
def pair_data(pair_data, tmp_path_factory, photo_by_name) -> PairData:
    """The session's pairs, on photos of the sizes in `SIZES`."""
    images = tmp_path_factory.mktemp("sized-images")
    for name in PHOTOS:
        photo_by_name(name).resize(SIZES[name]).save(images / f"{name}.jpg")
    pairs = write_pairs(images.parent / f"{images.name}.jsonl", pair_data.rows)
    return PairData(pairs, images, pair_data.rows)


def plain_inputs(processor: Any, row: dict[str, Any], response_key: str) -> tuple[Any, int]:
    """The processor's own output for prompt and response, and where the response starts."""
    from trl.data_utils import prepare_multimodal_messages

    image = row["images"][0]
    prompt = prepare_multimodal_messages(row["prompt"], [image])
    response = row[response_key]
    template = processing.chat_template(processor)
    prompt_text = processor.apply_chat_template(
        prompt, add_generation_prompt=True, chat_template=template
    )
    if processing.is_prefix_lm(processor):
        # PaliGemma's own fine-tuning call: prefix and suffix, 0 and 1 in token_type_ids.
        inputs = processor(
            text=[prompt_text],
            images=[[image]],
            suffix=[processing.message_text(response)],
            return_tensors="pt",
        )
        start = int((inputs["token_type_ids"][0] == 0).sum())
    else:
        full_text = processor.apply_chat_template(prompt + response, chat_template=template)
        assert full_text.startswith(prompt_text)
        alone = processor(text=[prompt_text], images=[[image]])["input_ids"][0]
        inputs = processor(text=[full_text], images=[[image]], return_tensors="pt")
        start = len(alone)
        assert inputs["input_ids"][0, :start].tolist() == list(alone)
    inputs.pop("labels", None)
    return inputs, start


def plain_token_logps(model: Any, inputs: Any, start: int) -> torch.Tensor:
    """The log-prob of each token from `start` on, from a forward pass on `inputs`."""
    ids = inputs["input_ids"][0]
    with torch.no_grad():
        logits = model(**inputs).logits[0, start - 1 : -1].float()
    return logits.log_softmax(-1).gather(1, ids[start:].unsqueeze(1)).squeeze(1)


def trained_token_logps(trainer: Any, inputs: dict[str, Any]) -> list[torch.Tensor]:
    """TRL's per-token log-probs of each sequence's completion: its loss's own model call."""
    kwargs = {key: value for key, value in inputs.items() if key != "completion_mask"}
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    model = trainer.forward_for(trainer.model, inputs)
    with torch.no_grad():
        per_token = model(**kwargs, labels=labels, fused_lm_head=True, use_cache=False).log_probs
    mask = inputs["completion_mask"][:, 1:].bool()
    return [row[keep] for row, keep in zip(per_token, mask, strict=True)]


def bpo_trainer(model_path: Path, pair_data: Any, cache: Path, out: Path, share: bool) -> Any:
    from bpo.train.model import load_model, load_processor, peft_config
    from bpo.train.runner import dpo_config
    from bpo.train.trainer import BpoDPOTrainer

    recipe = tiny_recipe(model_path, pair_data, out, cache, "train.precompute_reference=false")
    args = dpo_config(recipe)
    processor = load_processor(recipe.model)
    prepared = tokenize_pairs(recipe, processor)
    assert prepared.counts["truncated"] == 0 and not prepared.counts["dropped"]
    model = load_model(recipe.model)
    return BpoDPOTrainer(
        model=model,
        args=args,
        train_dataset=prepared.dataset,
        processing_class=processor,
        data_collator=PreferenceCollator(processor, processor.tokenizer.pad_token_id, share),
        peft_config=peft_config(recipe, model),
    )


def _check(arch, share, tiny_checkpoint, pair_data, train_cache, tmp_path) -> float:
    trainer = bpo_trainer(tiny_checkpoint(arch), pair_data, train_cache, tmp_path / "run", share)
    rows = [trainer.train_dataset[index] for index in ROWS]
    batch = trainer.data_collator(rows)
    prepared = trainer._prepare_inputs(batch)
    with torch.no_grad():
        chosen, rejected = trainer.reference_logps(prepared)
    processor = trainer.processing_class
    expected = [plain_inputs(processor, row, key) for key in ("chosen", "rejected") for row in rows]
    if not share:
        # TRL's layout carries every output of the processor, and each sequence's ids and
        # per-token outputs are the processor's own for its prompt and response (Gemma 3's
        # token_type_ids: 1 on image tokens; PaliGemma's: 1 on the answer ...).
        assert set(batch) - {"completion_mask"} == set(expected[0][0])
        for index, (inputs, _) in enumerate(expected):
            length = inputs["input_ids"].size(1)
            for key in ("input_ids", *processing.PER_TOKEN_KEYS):
                if key in inputs:
                    torch.testing.assert_close(batch[key][index, :length], inputs[key][0])
    base = trainer.base_model()
    with trainer.model.disable_adapter():  # LoRA's B starts at 0: the base model anyway
        plain_tokens = [plain_token_logps(base, *item) for item in expected]
        trained_tokens = trained_token_logps(trainer, prepared)
        for ours_tokens, theirs in zip(trained_tokens, plain_tokens, strict=True):
            torch.testing.assert_close(ours_tokens, theirs, rtol=0, atol=TOLERANCE)
    plain = torch.tensor([float(tokens.sum()) for tokens in plain_tokens], dtype=torch.float64)
    ours = torch.tensor(chosen.tolist() + rejected.tolist(), dtype=torch.float64)
    bound = TOLERANCE + 2 * FLOAT32_STEP * plain.abs()
    assert ((ours - plain).abs() <= bound).all(), (ours.tolist(), plain.tolist())
    assert len(set(plain.tolist())) == len(plain)  # six different sequences: a mix-up shows
    return float((ours - plain).abs().max())


@pytest.mark.parametrize("arch", available_arches())
def test_trained_log_probs_equal_a_plain_forward_pass(
    arch, tiny_checkpoint, pair_data, train_cache, tmp_path
):
    _check(arch, False, tiny_checkpoint, pair_data, train_cache, tmp_path)


@pytest.mark.parametrize("arch", PACKED_ARCHES)
def test_packed_log_probs_equal_a_plain_forward_pass(
    arch, tiny_checkpoint, pair_data, train_cache, tmp_path
):
    _check(arch, True, tiny_checkpoint, pair_data, train_cache, tmp_path)
