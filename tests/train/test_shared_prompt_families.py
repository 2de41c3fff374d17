"""Every packed family: the shared-prompt layout gives TRL's per-token log-probs and gradients.

For each family, the same pairs run through TRL's two-sequence layout (the model
building its own masks and positions) and through the packed layout (ours); the
per-token log-probs (and entropies) of every response token must agree within
1e-5, and the gradients of every parameter within 1e-5 of the largest one (fp32;
measured: log-probs <= 1e-6, gradients <= 6e-7 relative). Sensitivity checks switch off one ingredient (the
bidirectional blocks, the multimodal positions, the window measured in TRL's
positions) and show that the comparison then fails.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from bpo.errors import ConfigError
from bpo.train.data import PreferenceCollator, tokenize_pairs
from bpo.train.model import load_model, load_processor
from bpo.train.shared_prompt import (
    FAMILIES,
    SharedPromptForward,
    shared_prompt_refusal,
    supports_shared_prompt,
)
from tests.train.conftest import PairData, tiny_recipe

# bpo.tiny_models name -> transformers model_type, for every packed family.
PACKED = {
    "llava": "llava",
    "llava-next": "llava_next",
    "llava-onevision": "llava_onevision",
    "qwen2-vl": "qwen2_vl",
    "qwen2.5-vl": "qwen2_5_vl",
    "qwen3-vl": "qwen3_vl",
    "gemma3": "gemma3",
    "idefics3": "idefics3",
    "smolvlm": "smolvlm",
    "internvl": "internvl",
    "mistral3": "mistral3",
    "paligemma": "paligemma",
}
# Pairs of pair_data: two photos, both rejected texts, and the pair whose prompt has a
# system message and an earlier turn (longer, so packed rows differ in length and pad).
ROWS = (0, 1, 5, 6)
TOLERANCE = 1e-5


def layouts(
    arch: str, model_path: Path, data: PairData, cache: Path, tmp_path: Path
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The processor, TRL's batch and the packed batch of the same pairs."""
    recipe = tiny_recipe(model_path, data, tmp_path / "run", cache)
    processor = load_processor(recipe.model)
    dataset = tokenize_pairs(recipe, processor).dataset
    rows = [dataset[index] for index in ROWS]
    pad = processor.tokenizer.pad_token_id
    trl_batch = PreferenceCollator(processor, pad)(rows)
    packed = PreferenceCollator(processor, pad, share_prompt=True)(rows)
    assert packed["packed_input_ids"].numel() < trl_batch["input_ids"].numel()
    return processor, trl_batch, packed


def differences(
    model: Any,
    trl_batch: dict[str, Any],
    packed: dict[str, Any],
    adjust: Callable[[Any], None] | None = None,
) -> tuple[float, float, float]:
    """Max |Δ| of the response tokens' log-probs, of their entropies, and of every gradient
    (relative to the largest gradient, or absolute below 1), packed vs TRL."""
    labels = trl_batch["input_ids"].masked_fill(trl_batch["completion_mask"] == 0, -100)
    inputs = {k: v for k, v in trl_batch.items() if k != "completion_mask"}
    model.zero_grad()
    expected = model(**inputs, labels=labels, fused_lm_head=True)
    expected.log_probs.sum().backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    forward = SharedPromptForward(model, model)
    if adjust is not None:
        adjust(forward)
    packed_inputs = {k: v for k, v in packed.items() if k != "completion_mask"}
    ours = forward(**packed_inputs, labels=labels, fused_lm_head=True)
    ours.log_probs.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == expected_grads.keys()
    assert len(grads) > 10  # the vision tower's and the language model's
    mask = trl_batch["completion_mask"][:, 1:].bool()
    assert torch.equal(ours.label_mask, mask)
    logps = (ours.log_probs[mask] - expected.log_probs[mask]).abs().max().item()
    entropy = (ours.entropy[mask] - expected.entropy[mask]).abs().max().item()
    grad = max((grads[n] - expected_grads[n]).abs().max().item() for n in grads)
    # Gradients of the summed log-probs reach ~100 here: float32 rounding of the sums, whose
    # order differs between the layouts, is measured against the largest one.
    scale = max(1.0, max(g.abs().max().item() for g in expected_grads.values()))
    model.zero_grad()
    return logps, entropy, grad / scale


def fused(model: Any) -> Any:
    """`model` with TRL's fused LM head (per-token log-probs and entropies), as DPOTrainer adds it."""
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    return model


def load(model_path: Path, data: PairData, tmp_path: Path) -> Any:
    """The tiny model as `bpo train` loads it, with TRL's fused head."""
    return fused(load_model(tiny_recipe(model_path, data, tmp_path / "run", None).model))


def with_config(source: Path, target: Path, **text_settings: Any) -> Path:
    """A copy of checkpoint `source` whose language model's config has `text_settings`."""
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.get("text_config", config).update(text_settings)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("arch", list(PACKED))
def test_packed_family_matches_trl_layout(arch, tiny_checkpoint, pair_data, train_cache, tmp_path):
    model_path = tiny_checkpoint(arch)
    _, trl_batch, packed = layouts(arch, model_path, pair_data, train_cache, tmp_path)
    model = load(model_path, pair_data, tmp_path)
    assert model.config.model_type == PACKED[arch]
    assert supports_shared_prompt(model), shared_prompt_refusal(model)
    logps, entropy, grad = differences(model, trl_batch, packed)
    print(f"{arch}: max |Δ| log-probs {logps:.2e}, entropy {entropy:.2e}, grads (rel.) {grad:.2e}")
    assert logps <= TOLERANCE and entropy <= TOLERANCE and grad <= TOLERANCE


@pytest.mark.parametrize(
    ("arch", "ingredient"),
    [
        ("gemma3", "image blocks"),
        ("paligemma", "prefix block"),
        ("qwen2.5-vl", "multimodal positions"),
        ("qwen3-vl", "multimodal positions"),
    ],
)
def test_each_ingredient_is_needed(
    arch, ingredient, tiny_checkpoint, pair_data, train_cache, tmp_path
):
    """Without the bidirectional blocks or the multimodal positions, log-probs differ from TRL's."""
    model_path = tiny_checkpoint(arch)
    _, trl_batch, packed = layouts(arch, model_path, pair_data, train_cache, tmp_path)
    model = load(model_path, pair_data, tmp_path)

    def drop(forward: SharedPromptForward) -> None:
        if ingredient == "multimodal positions":
            forward.family = dataclasses.replace(forward.family, positions="text")
        else:
            forward.family = dataclasses.replace(forward.family, blocks=None)

    logps, _, _ = differences(model, trl_batch, packed, adjust=drop)
    assert logps > 1e-3


@pytest.mark.parametrize("arch", ["gemma3", "mistral3"])
def test_sliding_window_counts_trl_positions(
    arch, tiny_checkpoint, pair_data, train_cache, tmp_path
):
    """With a window shorter than the pairs (Gemma 3: local and global layers, a mask per kind;
    Mistral: one sliding kind), the packed layout matches TRL's, and only with the window
    measured in TRL's positions."""
    model_path = with_config(tiny_checkpoint(arch), tmp_path / "model", sliding_window=8)
    _, trl_batch, packed = layouts(arch, model_path, pair_data, train_cache, tmp_path)
    model = load(model_path, pair_data, tmp_path)
    assert model.config.get_text_config().sliding_window == 8
    assert max(differences(model, trl_batch, packed)) <= TOLERANCE

    def packed_distance(forward: SharedPromptForward) -> None:
        forward.sliding_window = None  # no window: the packed rows' own reach

    logps, _, _ = differences(model, trl_batch, packed, adjust=packed_distance)
    assert logps > 1e-3


def test_paligemma2_one_mask_for_sliding_and_global_layers(
    tiny_checkpoint, pair_data, train_cache, tmp_path
):
    """PaliGemma 2 (Gemma 2 inside) builds its sliding and global masks from the one 4D mask
    we pass: exact while every pair fits the window, refused (not silently wrong) beyond."""
    from transformers import Gemma2Config, PaliGemmaConfig, PaliGemmaForConditionalGeneration

    model_path = tiny_checkpoint("paligemma")
    _, trl_batch, packed = layouts("paligemma", model_path, pair_data, train_cache, tmp_path)
    config = PaliGemmaConfig.from_pretrained(model_path)
    text = config.text_config
    longest = int(
        (packed["packed_lengths"][:, 0] + packed["packed_lengths"][:, 1:].max(1).values).max()
    )
    config.text_config = Gemma2Config(
        **{key: getattr(text, key) for key in ("vocab_size", "hidden_size", "intermediate_size",
                                             "num_hidden_layers", "num_attention_heads",
                                             "num_key_value_heads", "head_dim", "bos_token_id",
                                             "eos_token_id", "pad_token_id")},
        sliding_window=longest,
        max_position_embeddings=2048,
    )  # fmt: skip
    torch.manual_seed(0)
    model = fused(PaliGemmaForConditionalGeneration(config))
    assert supports_shared_prompt(model) and not FAMILIES["paligemma"].mask_mapping
    assert max(differences(model, trl_batch, packed)) <= TOLERANCE
    model.config.text_config.sliding_window = longest - 1
    with pytest.raises(ConfigError, match="sliding window"):
        differences(model, trl_batch, packed)


class _Config:
    def __init__(self, model_type: str, kernel: str = "sdpa", **text: Any) -> None:
        self.model_type = model_type
        self._attn_implementation = kernel
        self._text = type("TextConfig", (), {"_attn_implementation": kernel, **text})()

    def get_text_config(self) -> Any:
        return self._text


class _Model:
    def __init__(self, config: _Config) -> None:
        self.config = config


def test_every_tiny_family_is_packed_or_says_why(tiny_checkpoint):
    from transformers import AutoConfig

    from bpo.tiny_models import ARCHES

    for arch in ARCHES:
        config = AutoConfig.from_pretrained(tiny_checkpoint(arch))
        refusal = shared_prompt_refusal(_Model(config))
        if arch in PACKED:
            assert refusal is None, arch
        else:
            assert arch == "mllama"
            assert refusal is not None and "cross-attention" in refusal and "\n" not in refusal


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (
            _Config("qwen2_5_vl", "flash_attention_2"),
            "flash_attention_2 attention: the kernel takes no 4D",
        ),
        (_Config("gemma3", "flex_attention"), "flex_attention attention"),
        (_Config("gemma3n"), "no packed layout for this family"),
        (_Config("gemma3", use_bidirectional_attention=True), "attends both ways"),
        (
            _Config("llava", layer_types=["chunked_attention", "full_attention"]),
            "chunked_attention",
        ),
    ],
)
def test_refusals_say_why(config, reason):
    model = _Model(config)
    assert not supports_shared_prompt(model)
    refusal = shared_prompt_refusal(model)
    assert refusal is not None and reason in refusal and "\n" not in refusal
