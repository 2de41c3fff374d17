"""LLaVA-OneVision (llava-hf/llava-onevision-qwen2-0.5b-ov-hf): SigLIP, an MLP projector and
Qwen2, with "anyres_max_9" images (a base view plus tiles, pooled down past 9 views)."""

from __future__ import annotations

from bpo.errors import ConfigError
from bpo.tiny_models.common import (
    Built,
    Family,
    TinySize,
    language_model_fields,
    special_ids,
    video_processor,
)
from bpo.tiny_models.qwen2_vl import qwen_tokenizer

SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<image>", "<video>"]

# The hub template (also in transformers' tests/models/llava_onevision): "<|im_start|>user
# <image>\n...<|im_end|><|im_start|>assistant\n", images and videos first, then the text.
# One change: the hub renders an assistant turn as "<|im_start|>assistant \n..." while its
# generation prompt is "<|im_start|>assistant\n"; here both are the latter, so a prompt is
# a prefix of the prompt with its answer (TRL's DPO cuts the answers off that way).
CHAT_TEMPLATE = r"""{%- for message in messages -%}
{%- if message['content'] is string -%}
{%- set parts = [{'type': 'text', 'text': message['content']}] -%}
{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}
{%- if message['role'] == 'assistant' -%}{{ '<|im_start|>assistant' }}{{ '\n' }}
{%- else -%}{{ '<|im_start|>' + message['role'] + ' ' }}
{%- for part in parts | selectattr('type', 'equalto', 'image') -%}{{ '<image>' }}{%- endfor -%}
{%- for part in parts | selectattr('type', 'equalto', 'video') -%}{{ '<video>' }}{%- endfor -%}
{{- '\n' }}{%- endif -%}
{%- for part in parts | selectattr('type', 'equalto', 'text') -%}{{ part['text'] }}{%- endfor -%}
{{- '<|im_end|>' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant' }}{{ '\n' }}{%- endif -%}
"""

# OneVision's pinpoints are every (rows, cols) grid of 384 px tiles up to 6x6; up to 2x2 here.
GRID = ((1, 1), (1, 2), (2, 1), (2, 2))


def build(size: TinySize) -> Built:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionProcessor,
        SiglipVisionConfig,
    )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    if size.image_size % size.patch_size:
        raise ConfigError(f"llava-onevision: image_size must be a multiple of {size.patch_size}")
    tokenizer = qwen_tokenizer(size, SPECIAL_TOKENS)
    ids = special_ids(tokenizer, SPECIAL_TOKENS)
    text = {**language_model_fields(size, tokenizer), "bos_token_id": None}
    text["eos_token_id"] = ids["<|im_end|>"]
    pinpoints = [[rows * size.image_size, cols * size.image_size] for rows, cols in GRID]
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=size.vision_hidden_size,
            intermediate_size=4 * size.vision_hidden_size,
            num_hidden_layers=size.vision_num_hidden_layers,
            num_attention_heads=size.vision_num_attention_heads,
            image_size=size.image_size,
            patch_size=size.patch_size,
            vision_use_head=False,
        ),
        text_config={"model_type": "qwen2", **text},
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",  # SigLIP has no CLS position to drop
        vision_feature_layer=-1,
    )
    model = LlavaOnevisionForConditionalGeneration(config)
    square = {"height": size.image_size, "width": size.image_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(
            size=square, image_grid_pinpoints=pinpoints
        ),
        video_processor=video_processor("LlavaOnevisionVideoProcessor", size=square),
        tokenizer=tokenizer,
        num_image_tokens=(size.image_size // size.patch_size) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


FAMILY = Family(
    name="llava-onevision",
    reference="llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    model_class="LlavaOnevisionForConditionalGeneration",
    image_marker="<image>",
    build=build,
    default_size=TinySize(image_size=32),
)
