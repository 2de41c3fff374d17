"""Qwen2.5-VL (Qwen/Qwen2.5-VL-3B-Instruct): Qwen2-VL with window attention in the ViT, a
SwiGLU vision MLP and absolute-time multimodal RoPE; the same processor and template."""

from __future__ import annotations

from bpo.tiny_models.common import Built, Family, TinySize, special_ids
from bpo.tiny_models.qwen2_vl import (
    CHAT_TEMPLATE,
    MERGE_SIZE,
    PATCH_SIZE,
    SPECIAL_TOKENS,
    TEMPORAL_PATCH_SIZE,
    check_geometry,
    mrope_section,
    processor_parts,
    qwen_tokenizer,
    text_config,
    vision_ids,
)


def build(size: TinySize) -> Built:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )

    check_geometry("qwen2.5-vl", size, PATCH_SIZE)
    tokenizer = qwen_tokenizer(size)
    ids = special_ids(tokenizer, SPECIAL_TOKENS)
    rope = {"rope_type": "default", "mrope_section": mrope_section(size), "rope_theta": 1_000_000.0}
    config = Qwen2_5_VLConfig(
        text_config=text_config(size, tokenizer, ids, rope_parameters=rope),
        vision_config={
            "depth": size.vision_num_hidden_layers,
            "hidden_size": size.vision_hidden_size,
            "intermediate_size": 2 * size.vision_hidden_size,
            "num_heads": size.vision_num_attention_heads,
            "out_hidden_size": size.hidden_size,  # the merger projects into the language model
            "patch_size": PATCH_SIZE,
            "spatial_merge_size": MERGE_SIZE,
            "temporal_patch_size": TEMPORAL_PATCH_SIZE,
            # Windows of 2x2 merged tokens (Qwen2.5-VL: 112 px = 4x4), so that images of
            # the default 84 px (3x3 merged tokens) split into several, padded windows;
            # the last block attends globally, as every 8th of Qwen2.5-VL's 32 does.
            "window_size": 2 * PATCH_SIZE * MERGE_SIZE,
            "fullatt_block_indexes": [size.vision_num_hidden_layers - 1],
        },
        **vision_ids(ids),
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    # Stop on either end marker, as Qwen2.5-VL-Instruct's generation config does.
    model.generation_config.eos_token_id = [ids["<|im_end|>"], tokenizer.pad_token_id]
    processor = Qwen2_5_VLProcessor(
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        **processor_parts(size, PATCH_SIZE, "Qwen2VLVideoProcessor"),
    )
    return model, processor


# As Qwen2-VL: 14 px patches merged 2x2, 84x84 px at most (4 to 9 image tokens).
FAMILY = Family(
    name="qwen2.5-vl",
    reference="Qwen/Qwen2.5-VL-3B-Instruct",
    model_class="Qwen2_5_VLForConditionalGeneration",
    image_marker="<|image_pad|>",
    build=build,
    default_size=TinySize(image_size=84),
)
