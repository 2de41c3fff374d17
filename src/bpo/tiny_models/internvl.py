"""InternVL 3 (OpenGVLab/InternVL3-1B-hf): InternViT, pixel shuffle (downsample ratio 0.5)
and an MLP projector into Qwen2.5; an image becomes "<img>" + <IMG_CONTEXT> tokens + "</img>"."""

from __future__ import annotations

from bpo.errors import ConfigError
from bpo.tiny_models.common import (
    Built,
    Family,
    TinySize,
    language_model_fields,
    name_tokens,
    special_ids,
    video_processor,
)
from bpo.tiny_models.qwen2_vl import qwen_tokenizer

IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", *IMAGE_TOKENS.values()]

# The template of the InternVL3 "-hf" checkpoints (transformers'
# models/internvl/convert_internvl_weights_to_hf.py): ChatML, an image as
# "<IMG_CONTEXT>\n" before its text, no default system prompt.
CHAT_TEMPLATE = r"""{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] }}{{ '\n' }}
{%- if message['content'] is string -%}{{ message['content'] }}
{%- else -%}{%- for part in message['content'] -%}
{%- if part['type'] == 'image' -%}{{ '<IMG_CONTEXT>' }}{{ '\n' }}
{%- elif part['type'] == 'video' -%}{{ '<video>' }}{{ '\n' }}
{%- elif part['type'] == 'text' -%}{{ part['text'] }}
{%- endif -%}{%- endfor -%}{%- endif -%}
{{- '<|im_end|>' }}{{ '\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant' }}{{ '\n' }}{%- endif -%}
"""


def build(size: TinySize) -> Built:
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
        GotOcr2ImageProcessorPil,
    )

    side = size.image_size // size.patch_size
    if size.image_size % size.patch_size or side % 2:
        raise ConfigError("internvl: image_size / patch_size must be an even integer")
    tokenizer = name_tokens(qwen_tokenizer(size, SPECIAL_TOKENS), extra_special_tokens=IMAGE_TOKENS)
    ids = special_ids(tokenizer, SPECIAL_TOKENS)
    # The pixel shuffle halves each side: (448/14)**2 / 4 = 256 tokens in InternVL3.
    tokens_per_image = (side // 2) ** 2
    text = {**language_model_fields(size, tokenizer), "bos_token_id": None}
    config = InternVLConfig(
        vision_config={
            "hidden_size": size.vision_hidden_size,
            "intermediate_size": 4 * size.vision_hidden_size,
            "num_hidden_layers": size.vision_num_hidden_layers,
            "num_attention_heads": size.vision_num_attention_heads,
            "image_size": [size.image_size, size.image_size],
            "patch_size": [size.patch_size, size.patch_size],
        },
        text_config={"model_type": "qwen2", **text},
        image_token_id=ids["<IMG_CONTEXT>"],
        image_seq_length=tokens_per_image,
        downsample_ratio=0.5,
    )
    model = InternVLForConditionalGeneration(config)
    square = {"height": size.image_size, "width": size.image_size}
    # As InternVL3-1B-hf: the image processor's config leaves crop_to_patches off, but
    # InternVLProcessor turns it on by default, so through the processor an image becomes
    # up to 12 tiles plus a thumbnail (GotOcr2's max_patches), 4 tokens each here.
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessorPil(size=square, crop_to_patches=False),
        video_processor=video_processor("InternVLVideoProcessor", size=square),
        tokenizer=tokenizer,
        image_seq_length=tokens_per_image,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


# 32 px tiles in 8 px patches (4x4), shuffled to 2x2 = 4 context tokens per tile.
FAMILY = Family(
    name="internvl",
    reference="OpenGVLab/InternVL3-1B-hf",
    model_class="InternVLForConditionalGeneration",
    image_marker="<IMG_CONTEXT>",
    build=build,
    default_size=TinySize(image_size=32),
)
