"""Qwen2-VL (Qwen/Qwen2-VL-2B-Instruct): a ViT with 2x2 patch merging, multimodal RoPE, Qwen2.

Also the shared parts of the Qwen families (tokenizer, chat template, pixel
geometry), which Qwen2.5-VL and Qwen3-VL reuse.
"""

from __future__ import annotations

from typing import Any

from bpo.errors import ConfigError
from bpo.tiny_models.common import (
    Built,
    Family,
    TinySize,
    special_ids,
    train_tokenizer,
    video_processor,
)

PATCH_SIZE = 14  # Qwen2-VL and Qwen2.5-VL; Qwen3-VL uses 16
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2

SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# ChatML with vision markers, as the hub template of Qwen2-VL-Instruct and
# Qwen2.5-VL-Instruct (which are the same), with its default system prompt. See
# `bpo.tiny_models.llava` for what every template here renders.
CHAT_TEMPLATE = r"""{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for part in content -%}
{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}
{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}
{%- elif part['type'] == 'text' -%}{{ part['text'] }}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- if messages[0]['role'] != 'system' -%}
{{- '<|im_start|>system' }}{{ '\n' }}{{ 'You are a helpful assistant.<|im_end|>' }}{{ '\n' }}
{%- endif -%}
{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] }}{{ '\n' }}{{ render(message['content']) + '<|im_end|>' }}{{ '\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant' }}{{ '\n' }}{%- endif -%}
"""


def qwen_tokenizer(size: TinySize, special_tokens: list[str] = SPECIAL_TOKENS) -> Any:
    """Qwen2's byte-level BPE, as in Qwen2-VL-Instruct: <|endoftext|> pads, <|im_end|> ends a turn, no BOS."""
    from transformers import Qwen2Tokenizer

    return train_tokenizer(
        Qwen2Tokenizer(eos_token="<|im_end|>", padding_side="left"), size, special_tokens
    )


def check_geometry(arch: str, size: TinySize, patch_size: int) -> None:
    factor = patch_size * MERGE_SIZE
    if size.image_size < 2 * factor:
        raise ConfigError(f"{arch}: image_size must be at least {2 * factor}")
    if (
        size.hidden_size % size.num_attention_heads
        or (size.hidden_size // size.num_attention_heads) % 2
    ):
        raise ConfigError(f"{arch}: hidden_size / num_attention_heads must be an even integer")


def mrope_section(size: TinySize) -> list[int]:
    """Multimodal RoPE splits half the head dimension over (time, height, width).

    Qwen2-VL uses [16, 24, 24] of 64; same proportions here, the remainder to time.
    """
    half = size.hidden_size // size.num_attention_heads // 2
    spatial = 3 * half // 8
    return [half - 2 * spatial, spatial, spatial]


def text_config(
    size: TinySize, tokenizer: Any, ids: dict[str, int], **extra: Any
) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": size.hidden_size,
        "intermediate_size": size.intermediate_size,
        "num_hidden_layers": size.num_hidden_layers,
        "num_attention_heads": size.num_attention_heads,
        "num_key_value_heads": size.num_key_value_heads,
        "max_position_embeddings": 2048,
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": tokenizer.pad_token_id,
        **extra,
    }


def vision_ids(ids: dict[str, int]) -> dict[str, Any]:
    """The config fields naming the vision markers' ids."""
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def geometry(size: TinySize, patch_size: int) -> dict[str, Any]:
    """Images of 2x2 merged tokens at least (Qwen2-VL's 56x56 px minimum), image_size**2 px at most."""
    factor = patch_size * MERGE_SIZE
    return {
        "min_pixels": (2 * factor) ** 2,
        "max_pixels": size.image_size**2,
        "patch_size": patch_size,
        "merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
    }


def processor_parts(size: TinySize, patch_size: int, video_class: str) -> dict[str, Any]:
    """Qwen2-VL's image processor and the family's video processor (its stand-in without torchvision)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    shape = geometry(size, patch_size)
    return {
        "image_processor": Qwen2VLImageProcessorPil(**shape),
        "video_processor": video_processor(video_class, **shape),
    }


def build(size: TinySize) -> Built:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    check_geometry("qwen2-vl", size, PATCH_SIZE)
    tokenizer = qwen_tokenizer(size)
    ids = special_ids(tokenizer, SPECIAL_TOKENS)
    rope = {"rope_type": "default", "mrope_section": mrope_section(size), "rope_theta": 1_000_000.0}
    config = Qwen2VLConfig(
        text_config=text_config(size, tokenizer, ids, rope_parameters=rope),
        vision_config={
            "depth": size.vision_num_hidden_layers,
            "embed_dim": size.vision_hidden_size,
            "num_heads": size.vision_num_attention_heads,
            "hidden_size": size.hidden_size,  # the merger projects into the language model
            "mlp_ratio": 2,
            "patch_size": PATCH_SIZE,
            "spatial_merge_size": MERGE_SIZE,
            "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        },
        **vision_ids(ids),
    )
    model = Qwen2VLForConditionalGeneration(config)
    # Stop on either end marker, as Qwen2-VL-Instruct's generation config does.
    model.generation_config.eos_token_id = [ids["<|im_end|>"], tokenizer.pad_token_id]
    processor = Qwen2VLProcessor(
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        **processor_parts(size, PATCH_SIZE, "Qwen2VLVideoProcessor"),
    )
    return model, processor


# 14 px patches merged 2x2; 84x84 px at most gives 4 to 9 image tokens.
FAMILY = Family(
    name="qwen2-vl",
    reference="Qwen/Qwen2-VL-2B-Instruct",
    model_class="Qwen2VLForConditionalGeneration",
    image_marker="<|image_pad|>",
    build=build,
    default_size=TinySize(image_size=84),
)
