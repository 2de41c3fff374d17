"""The shared-prompt layout gives TRL's per-token log-probs and gradients, with fewer tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bpo.train.data import PreferenceCollator, tokenize_pairs
from bpo.train.model import load_model, load_processor
from bpo.train.shared_prompt import (
    SharedPromptForward,
    pack_pairs,
    shared_prompt_mask,
    supports_shared_prompt,
)
from tests.train.conftest import tiny_recipe

ARCHES = {"llava": "tiny_llava_path", "qwen2-vl": "tiny_qwen2vl_path"}


def test_mask_and_index_of_one_pair_by_hand():
    # Prompt [1, 2], chosen [3], rejected [4, 5]: packed [1, 2, 3, 2', 4, 5].
    packed = pack_pairs([[1, 2]], [[3]], [[4, 5]], pad_token_id=0, width=4)
    assert packed["packed_input_ids"].tolist() == [[1, 2, 3, 2, 4, 5]]
    assert packed["packed_labels"].tolist() == [[-100, -100, 3, -100, 4, 5]]
    # TRL scores chosen 3 at position 1 (after 2); rejected 4 at 1 and 5 at 2.
    assert packed["packed_index"].tolist() == [[-1, 1, -1], [-1, 3, 4]]
    mask = shared_prompt_mask(packed["packed_lengths"], 6)[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0, 0],  # 1
        [1, 1, 0, 0, 0, 0],  # 2
        [1, 1, 1, 0, 0, 0],  # 3 (chosen) sees the prompt
        [1, 0, 0, 1, 0, 0],  # 2' sees what 2 saw, and itself
        [1, 0, 0, 1, 1, 0],  # 4 sees the prompt through 2', not 3
        [1, 0, 0, 1, 1, 1],  # 5
    ]


@pytest.mark.parametrize("arch", list(ARCHES))
def test_shared_prompt_matches_trl_layout(arch, request, pair_data, train_cache, tmp_path):
    from trl.trainer.utils import add_fused_lm_head

    model_path = Path(request.getfixturevalue(ARCHES[arch]))
    recipe = tiny_recipe(model_path, pair_data, tmp_path / "run", train_cache)
    processor = load_processor(recipe.model)
    rows = list(tokenize_pairs(recipe, processor).dataset)[:4]
    pad = processor.tokenizer.pad_token_id
    trl_batch = PreferenceCollator(processor, pad)(rows)
    packed = PreferenceCollator(processor, pad, share_prompt=True)(rows)
    # Fewer tokens: each prompt (with its image tokens) once.
    assert packed["packed_input_ids"].numel() < trl_batch["input_ids"].numel()

    model = load_model(recipe.model)
    assert supports_shared_prompt(model)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    labels = trl_batch["input_ids"].masked_fill(trl_batch["completion_mask"] == 0, -100)
    inputs = {k: v for k, v in trl_batch.items() if k != "completion_mask"}
    expected = model(**inputs, labels=labels, fused_lm_head=True)
    expected_sum = expected.log_probs.sum()
    expected_sum.backward()
    expected_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()

    packed_inputs = {k: v for k, v in packed.items() if k != "completion_mask"}
    ours = SharedPromptForward(model, model)(**packed_inputs, labels=labels, fused_lm_head=True)
    mask = trl_batch["completion_mask"][:, 1:].bool()
    torch.testing.assert_close(ours.log_probs[mask], expected.log_probs[mask], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.entropy[mask], expected.entropy[mask], rtol=1e-4, atol=1e-4)
    ours.log_probs.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) == len(expected_grads)
    for grad, reference in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, reference, rtol=1e-3, atol=1e-5)
