"""LLaVA-1.5 (llava-hf/llava-1.5-7b-hf): a CLIP vision tower, an MLP projector, Llama (Vicuna).

The toy world's base model (`bpo.toy.base_model`) is built from this one, so its
tokenizer and weights for a given seed must not change.
"""

from __future__ import annotations

from typing import Any

from bpo.errors import ConfigError
from bpo.tiny_models.common import (
    ALPHABET,
    Built,
    Family,
    TinySize,
    language_model_fields,
    train_tokenizer,
    within_words,
)

# LLaVA-1.5 ("llava_v1" conversation of haotian-liu/LLaVA, as in llava-hf's template):
# "USER: <image>\n... ASSISTANT: ...</s>". Like every template here it renders string
# content and the list form [{"type": "image"}, {"type": "text", ...}], closes every
# assistant turn with the end-of-turn token (TRL's DPO cuts chosen/rejected off the
# prompt) and honours add_generation_prompt. Newlines are written {{ '\n' }}: transformers
# renders templates with trim_blocks.
CHAT_TEMPLATE = r"""{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for part in content -%}
{%- if part['type'] == 'image' -%}{{ '<image>' }}{{ '\n' }}
{%- elif part['type'] == 'text' -%}{{ part['text'] }}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}{{ render(message['content']) + ' ' }}
{%- elif message['role'] == 'user' -%}{{ 'USER: ' + render(message['content']) + ' ' }}
{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT: ' + render(message['content']) + eos_token }}
{%- else -%}{{ raise_exception('unknown role: ' + message['role']) }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}
"""


def llama_tokenizer(size: TinySize, special_tokens: list[str]) -> Any:
    """A Llama (SentencePiece-style BPE) tokenizer trained on the corpus; pads with <pad>."""
    from transformers import LlamaTokenizer

    # BOS comes from the chat template. Left padding: decoder-only generation continues
    # the right end of a batch.
    base = within_words(
        LlamaTokenizer(add_bos_token=False, add_eos_token=False, padding_side="left")
    )
    tokenizer = train_tokenizer(base, size, [*special_tokens, "<pad>"], initial_alphabet=ALPHABET)
    tokenizer.backend_tokenizer.model.unk_token = "<unk>"  # rather than dropping other characters
    tokenizer.pad_token = "<pad>"
    return tokenizer


def clip_vision_config(size: TinySize) -> Any:
    """CLIP's vision tower at `size` (llava-1.5 uses ViT-L/14 at 336 px)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=size.vision_hidden_size,
        intermediate_size=4 * size.vision_hidden_size,
        projection_dim=size.vision_hidden_size,
        num_hidden_layers=size.vision_num_hidden_layers,
        num_attention_heads=size.vision_num_attention_heads,
        image_size=size.image_size,
        patch_size=size.patch_size,
    )


def build(size: TinySize) -> Built:
    from transformers import (
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    if size.image_size % size.patch_size:
        raise ConfigError(f"llava: image_size must be a multiple of {size.patch_size}")
    tokenizer = llama_tokenizer(size, ["<image>"])
    # As llava-1.5-7b-hf: the CLS position is counted (+1) then dropped by the "default" strategy.
    config = LlavaConfig(
        vision_config=clip_vision_config(size),
        text_config=LlamaConfig(**language_model_fields(size, tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=(size.image_size // size.patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size.image_size},
        crop_size={"height": size.image_size, "width": size.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=size.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


# 32 px images in 8 px patches give 16 image tokens (llava-1.5 uses 336/14 -> 576).
FAMILY = Family(
    name="llava",
    reference="llava-hf/llava-1.5-7b-hf",
    model_class="LlavaForConditionalGeneration",
    image_marker="<image>",
    build=build,
    default_size=TinySize(image_size=32),
)
