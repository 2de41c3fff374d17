"""LLaVA-NeXT (llava-hf/llava-v1.6-mistral-7b-hf): LLaVA's CLIP tower and projector on
Mistral, with "anyres" images (a base view plus tiles of the best-fitting grid, a
learned newline closing each row of image features)."""

from __future__ import annotations

from bpo.errors import ConfigError
from bpo.tiny_models.common import Built, Family, TinySize, language_model_fields
from bpo.tiny_models.llava import clip_vision_config, llama_tokenizer

# llava-v1.6-mistral-7b-hf's template: "[INST] <image>\n... [/INST] answer</s>". The hub
# template leaves BOS to the tokenizer and writes "</s> " after an answer; here BOS comes
# from the template (see `bpo.tiny_models.common`) and the answer ends at EOS.
CHAT_TEMPLATE = r"""{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for part in content -%}
{%- if part['type'] == 'image' -%}{{ '<image>' }}{{ '\n' }}
{%- elif part['type'] == 'text' -%}{{ part['text'] }}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}{{ '<<SYS>>' }}{{ '\n' }}{{ render(message['content']) }}{{ '\n' }}{{ '<</SYS>>' }}{{ '\n\n' }}
{%- elif message['role'] == 'user' -%}{{ '[INST] ' + render(message['content']) + ' [/INST]' }}
{%- elif message['role'] == 'assistant' -%}{{ ' ' + render(message['content']) + eos_token }}
{%- else -%}{{ raise_exception('unknown role: ' + message['role']) }}
{%- endif -%}
{%- endfor -%}
"""

# llava-v1.6's grid of tiles, in units of its 336 px view: 1x2, 2x1, 2x2, 3x1, 1x3.
GRID = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))


def build(size: TinySize) -> Built:
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
        MistralConfig,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import (
        LlavaNextImageProcessorPil,
    )

    if size.image_size % size.patch_size:
        raise ConfigError(f"llava-next: image_size must be a multiple of {size.patch_size}")
    tokenizer = llama_tokenizer(size, ["<image>"])
    pinpoints = [[rows * size.image_size, cols * size.image_size] for rows, cols in GRID]
    config = LlavaNextConfig(
        vision_config=clip_vision_config(size),
        text_config=MistralConfig(**language_model_fields(size, tokenizer), sliding_window=None),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        image_seq_length=(size.image_size // size.patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": size.image_size},
        crop_size={"height": size.image_size, "width": size.image_size},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=size.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS position, dropped by "default"
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


# 32 px views in 8 px patches: 16 tokens for the base view, up to 48 more for the tiles.
FAMILY = Family(
    name="llava-next",
    reference="llava-hf/llava-v1.6-mistral-7b-hf",
    model_class="LlavaNextForConditionalGeneration",
    image_marker="<image>",
    build=build,
    default_size=TinySize(image_size=32),
)
