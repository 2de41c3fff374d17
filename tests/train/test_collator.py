"""The collator's rules on hand-made tensors, and what it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bpo import processing
from bpo.errors import BpoError
from bpo.tiny_models import load_tiny_model
from bpo.train.collator import PreferenceCollator


@pytest.fixture(scope="module")
def processors(tiny_checkpoint: Any) -> dict[str, Any]:
    return {arch: load_tiny_model(tiny_checkpoint(arch))[1] for arch in ("llava", "paligemma")}


def test_per_token_outputs_over_a_response_by_hand(processors: dict[str, Any]) -> None:
    llava, paligemma = processors["llava"], processors["paligemma"]
    # Mllama's mask, 3 prompt tokens x 1 image x 2 tiles: the image token, then text after it.
    cross = torch.tensor([[[0, 0]], [[1, 1]], [[1, 0]]])
    extended = processing.extend_per_token(llava, "cross_attention_mask", cross, 2)
    assert extended[:, 0].tolist() == [[0, 0], [1, 1], [1, 0], [1, 0], [1, 0]]
    types = torch.tensor([1, 1, 0])  # Gemma 3: two image tokens, then text
    gemma = processing.extend_per_token(llava, "token_type_ids", types, 2)
    assert gemma.tolist() == [1, 1, 0, 0, 0]
    prefix = torch.tensor([0, 0, 0])  # PaliGemma: the prefix; the answer is its causal suffix
    answer = processing.extend_per_token(paligemma, "token_type_ids", prefix, 2)
    assert answer.tolist() == [0, 0, 0, 1, 1]
    assert processing.padding_value(paligemma, "token_type_ids") == 1
    assert processing.extend_per_token(llava, "mm_token_type_ids", types, 1).tolist()[-1] == 0
    assert processing.extend_per_token(llava, "attention_mask", prefix, 1).tolist() == [0, 0, 0, 1]


def test_an_unknown_per_token_output_is_refused() -> None:
    ids = torch.zeros((2, 5), dtype=torch.long)
    outputs = {"input_ids": ids, "pixel_values": torch.zeros(2, 3, 4, 4), "mystery": ids.clone()}
    with pytest.raises(BpoError, match="mystery"):
        processing.split_outputs(outputs, ids)
    per_token, images = processing.split_outputs({**outputs, "mystery": torch.zeros(3)}, ids)
    assert set(images) == {"pixel_values", "mystery"} and not per_token


def _row(processor: Any, photo: Any, question: str) -> dict[str, Any]:
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    text = processor.apply_chat_template(
        messages, add_generation_prompt=True, chat_template=processing.chat_template(processor)
    )
    ids = processor(text=[text], images=[[photo]], add_special_tokens=False)["input_ids"][0]
    return {
        "prompt_text": text,
        "prompt_ids": list(ids),
        "chosen_ids": [5, 6, 7],
        "rejected_ids": [8],
        "images": [photo],
    }


def test_a_stale_cache_is_refused(processors: dict[str, Any], photo: Any) -> None:
    processor = processors["llava"]
    row = _row(processor, photo, "Is there a cat?")
    collate = PreferenceCollator(processor, processor.tokenizer.pad_token_id)
    assert collate([row])["input_ids"].shape == (2, len(row["prompt_ids"]) + 3)
    stale = {**row, "prompt_ids": row["prompt_ids"][:-1]}  # a processor that tokenizes otherwise
    with pytest.raises(BpoError, match="cached"):
        collate([stale])


def test_paligemma_packs_its_prefix_as_the_prompt_segment(
    processors: dict[str, Any], photo: Any
) -> None:
    # PaliGemma's answer tokens are type 1 (its suffix); the packed layout needs no types:
    # its prefix block is the prompt segment (bpo.train.shared_prompt.forward), and the
    # packed and TRL layouts agree (tests/train/test_shared_prompt_families.py).
    processor = processors["paligemma"]
    pad = processor.tokenizer.pad_token_id
    row = _row(processor, photo, "Is there a cat?")
    packed = PreferenceCollator(processor, pad, share_prompt=True)([row])
    assert "packed_token_type_ids" not in packed and "packed_input_ids" in packed
    trl = PreferenceCollator(processor, pad)([row])
    answers = trl["completion_mask"].bool()
    assert (trl["token_type_ids"][answers] == 1).all()
    assert (trl["token_type_ids"][~answers & trl["attention_mask"].bool()] == 0).all()


def test_paligemma_pairs_are_prefix_and_suffix(tiny_checkpoint: Any, tmp_path: Path) -> None:
    from bpo.train.data import render_texts, response_ids

    _, processor = load_tiny_model(tiny_checkpoint("paligemma"))
    example = {
        "prompt": [{"role": "user", "content": "Describe the image."}],
        "chosen": [{"role": "assistant", "content": "A cat."}],
        "rejected": [{"role": "assistant", "content": "A dog."}],
        "images": [None],
    }
    texts = render_texts(example, processor)
    assert texts == {"prompt": "Describe the image.", "chosen": "A cat.", "rejected": "A dog."}
    tokenizer = processor.tokenizer
    assert response_ids(processor, "A cat.")[-1] == tokenizer.eos_token_id
