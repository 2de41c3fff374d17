"""Qwen3-VL (Qwen/Qwen3-VL-2B-Instruct): a SigLIP-2-style ViT with learned, interpolated
position embeddings and 16 px patches, DeepStack (features of inner vision layers added
to the first decoder layers) and interleaved multimodal RoPE, on Qwen3."""

from __future__ import annotations

from bpo.tiny_models.common import Built, Family, TinySize, special_ids
from bpo.tiny_models.qwen2_vl import (
    MERGE_SIZE,
    SPECIAL_TOKENS,
    TEMPORAL_PATCH_SIZE,
    check_geometry,
    processor_parts,
    qwen_tokenizer,
    text_config,
    vision_ids,
)

PATCH_SIZE = 16

# Qwen3-VL-Instruct's template without tools or reasoning: ChatML with vision markers and,
# unlike Qwen2-VL's, no default system prompt.
CHAT_TEMPLATE = r"""{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for part in content -%}
{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}
{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}
{%- elif part['type'] == 'text' -%}{{ part['text'] }}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] }}{{ '\n' }}{{ render(message['content']) + '<|im_end|>' }}{{ '\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant' }}{{ '\n' }}{%- endif -%}
"""


def build(size: TinySize) -> Built:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    check_geometry("qwen3-vl", size, PATCH_SIZE)
    tokenizer = qwen_tokenizer(size)
    ids = special_ids(tokenizer, SPECIAL_TOKENS)
    head_dim = size.hidden_size // size.num_attention_heads
    # Qwen3-VL interleaves (time, height, width) over half the head dimension, [24, 20, 20]
    # of 64; same proportions here, the remainder to time.
    spatial = head_dim // 2 * 20 // 64
    rope = {
        "rope_type": "default",
        "mrope_section": [head_dim // 2 - 2 * spatial, spatial, spatial],
        "mrope_interleaved": True,
        "rope_theta": 5_000_000.0,
    }
    grid = size.image_size // PATCH_SIZE  # patches on a side of the largest image
    config = Qwen3VLConfig(
        text_config=text_config(size, tokenizer, ids, head_dim=head_dim, rope_parameters=rope),
        vision_config={
            "depth": size.vision_num_hidden_layers,
            "hidden_size": size.vision_hidden_size,
            "intermediate_size": 4 * size.vision_hidden_size,
            "num_heads": size.vision_num_attention_heads,
            "out_hidden_size": size.hidden_size,
            "patch_size": PATCH_SIZE,
            "spatial_merge_size": MERGE_SIZE,
            "temporal_patch_size": TEMPORAL_PATCH_SIZE,
            # A learned grid interpolated to each image's (Qwen3-VL: 48x48).
            "num_position_embeddings": grid * grid,
            # One DeepStack level from the first layer (Qwen3-VL-2B: layers 5, 11, 17 of 24).
            "deepstack_visual_indexes": [0],
        },
        **vision_ids(ids),
    )
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], tokenizer.pad_token_id]
    processor = Qwen3VLProcessor(
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        **processor_parts(size, PATCH_SIZE, "Qwen3VLVideoProcessor"),
    )
    return model, processor


# 16 px patches merged 2x2; 96x96 px at most gives 4 to 9 image tokens.
FAMILY = Family(
    name="qwen3-vl",
    reference="Qwen/Qwen3-VL-2B-Instruct",
    model_class="Qwen3VLForConditionalGeneration",
    image_marker="<|image_pad|>",
    build=build,
    default_size=TinySize(image_size=96),
)
