"""Which VLM families run with the shared-prompt layout, what each needs, and why the others don't.

A family can be packed when the model takes the position ids and attention masks
we build and computes nothing else per sequence from the layout. For each one,
`FAMILIES` says how its text positions are counted and which prompt tokens attend
to each other both ways (read from each model's ``forward`` in transformers 5:
``modeling_<family>.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ATTENTION_KERNELS = ("sdpa", "eager")
# The layer kinds whose masks the packed layout builds (transformers' ``config.layer_types``).
LAYER_KINDS = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class PackedFamily:
    """How a family's positions and masks are built in the packed layout.

    Attributes:
        positions: ``"text"``: 1D positions counting tokens; ``"mrope"``: Qwen's multimodal
            RoPE, from the model's own ``model.get_rope_index``.
        first_position: the position of the first token (PaliGemma counts from 1:
            `PaliGemmaModel.forward`'s ``position_ids + 1``).
        blocks: which prompt tokens attend to each other both ways: ``"image"`` (each
            image's tokens, ``token_type_ids == 1``: Gemma 3), ``"prefix"`` (the whole
            prompt, ``token_type_ids == 0``: PaliGemma's prefix LM), or None (causal).
        mask_mapping: the model takes ``{layer kind: 4D mask}`` as ``attention_mask``;
            False where its forward builds that mapping itself from one 4D mask
            (PaliGemma), which then serves every layer.
    """

    positions: Literal["text", "mrope"] = "text"
    first_position: int = 0
    blocks: Literal["image", "prefix"] | None = None
    mask_mapping: bool = True


# model_type -> its packed layout. The 1D-RoPE families pass position_ids and the mask
# straight to their language model (modeling_llava, _llava_next, _llava_onevision,
# _idefics3, _smolvlm, _internvl, _mistral3: ``self.language_model(attention_mask=...,
# position_ids=...)``); a 4D mask is used as is (masking_utils._preprocess_mask_arguments).
FAMILIES: dict[str, PackedFamily] = {
    "llava": PackedFamily(),
    "llava_next": PackedFamily(),
    "llava_onevision": PackedFamily(),
    "idefics3": PackedFamily(),
    "smolvlm": PackedFamily(),
    "internvl": PackedFamily(),
    "mistral3": PackedFamily(),
    "qwen2_vl": PackedFamily(positions="mrope"),
    "qwen2_5_vl": PackedFamily(positions="mrope"),
    "qwen3_vl": PackedFamily(positions="mrope"),
    # Gemma3Model.forward: bidirectional within each image (create_masks_for_vision_model);
    # a mapping passed as attention_mask is used as is.
    "gemma3": PackedFamily(blocks="image"),
    # PaliGemmaModel.forward: 1-based positions, the prefix (token_type_ids == 0) one
    # bidirectional block, and its own mask mapping built from a 4D mask.
    "paligemma": PackedFamily(first_position=1, blocks="prefix", mask_mapping=False),
}

# Families that cannot be packed, and why (one line each).
REFUSALS = {
    "mllama": (
        "its cross-attention layers read the image through a per-token cross_attention_mask "
        "and skip text rows with none, which the packed layout does not build"
    ),
}


def text_config(model: Any) -> Any:
    """The language model's config (the model's own for text-only configs)."""
    return model.config.get_text_config()


def attention_kernel(model: Any) -> str:
    """The language model's attention implementation (``sdpa`` when unset)."""
    config = model.config
    kernel = getattr(text_config(model), "_attn_implementation", None)
    return str(kernel or getattr(config, "_attn_implementation", None) or "sdpa")


def layer_kinds(config: Any) -> list[str]:
    """The attention kinds of the language model's layers, in order of first use.

    ``config.layer_types`` where the config has it (Gemma 3, Qwen2 ...); otherwise one
    kind for every layer: sliding when a window is set (`MistralModel.forward` picks
    `create_sliding_window_causal_mask` then), else full.
    """
    kinds = getattr(config, "layer_types", None)
    if kinds:
        return list(dict.fromkeys(kinds))
    return ["sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"]


def shared_prompt_refusal(model: Any) -> str | None:
    """Why `model` (a transformers VLM, unwrapped) cannot run with the shared-prompt layout,
    in one line; None when it can."""
    model_type = model.config.model_type
    if model_type in REFUSALS:
        return f"{model_type}: {REFUSALS[model_type]}"
    if model_type not in FAMILIES:
        return f"{model_type}: no packed layout for this family (its positions and masks are not mapped)"
    kernel = attention_kernel(model)
    if kernel not in ATTENTION_KERNELS:
        return (
            f"{model_type} with {kernel} attention: the kernel takes no 4D attention mask "
            f"(the packed layout needs {' or '.join(ATTENTION_KERNELS)})"
        )
    config = text_config(model)
    if FAMILIES[model_type].mask_mapping and getattr(config, "use_bidirectional_attention", False):
        # Gemma3TextModel.forward then builds a mask that sees every token both ways (an
        # encoder). Where the VLM builds the mask itself (PaliGemma sets the flag for its
        # prefix), the flag only changes is_causal, which no kernel reads given a mask.
        return (
            f"{model_type}: its language model attends both ways, so responses would see each other"
        )
    unknown = [kind for kind in layer_kinds(config) if kind not in LAYER_KINDS]
    if unknown:
        return f"{model_type}: its {', '.join(unknown)} layers need masks the packed layout does not build"
    return None


def supports_shared_prompt(model: Any) -> bool:
    """Whether `model` (a transformers VLM, unwrapped) runs with the shared-prompt layout."""
    return shared_prompt_refusal(model) is None
