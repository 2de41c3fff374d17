"""Mistral 3 (mistralai/Mistral-Small-3.1-24B-Instruct-2503): Pixtral's ViT (2D RoPE, images
at their own aspect ratio), a 2x2 patch merger and a projector into Mistral; an image is
rows of [IMG] tokens, each row closed by [IMG_BREAK], the last by [IMG_END].

Its processor is Pixtral's, which transformers 5 marks as needing torchvision; without
it, `bpo.compat.allow_processors_without_torchvision` makes it load (the builder and
`load_tiny_model` apply it).
"""

from __future__ import annotations

from bpo import compat
from bpo.errors import ConfigError
from bpo.tiny_models.common import (
    Built,
    Family,
    TinySize,
    byte_level_tokenizer,
    language_model_fields,
    special_ids,
)

MERGE_SIZE = 2
CONTROLS = [
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "[INST]",
    "[/INST]",
    "[IMG]",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
]

# Mistral-Small-3.1-24B-Instruct-2503's template (transformers' tests/models/mistral3 keep a
# copy): BOS, a system prompt always, "[INST]...[/INST]answer</s>", images as [IMG]. Its
# default system prompt also states today's date (strftime_now); that sentence is left out.
CHAT_TEMPLATE = r"""{%- set default_system_message = 'You are Mistral Small 3, a Large Language Model (LLM) created by Mistral AI, a French startup headquartered in Paris.' -%}
{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for part in content -%}
{%- if part['type'] == 'text' -%}{{ part['text'] }}
{%- elif part['type'] == 'image' -%}{{ '[IMG]' }}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- if messages[0]['role'] == 'system' -%}
{%- set system_message = render(messages[0]['content']) -%}
{%- set loop_messages = messages[1:] -%}
{%- else -%}
{%- set system_message = default_system_message -%}
{%- set loop_messages = messages -%}
{%- endif -%}
{{- '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' -}}
{%- for message in loop_messages -%}
{%- if message['role'] == 'user' -%}{{ '[INST]' + render(message['content']) + '[/INST]' }}
{%- elif message['role'] == 'system' -%}{{ '[SYSTEM_PROMPT]' + render(message['content']) + '[/SYSTEM_PROMPT]' }}
{%- elif message['role'] == 'assistant' -%}{{ render(message['content']) + eos_token }}
{%- else -%}{{ raise_exception('Only user, system and assistant roles are supported!') }}
{%- endif -%}
{%- endfor -%}
"""


def build(size: TinySize) -> Built:
    compat.allow_processors_without_torchvision()
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralProcessor,
    )
    from transformers.models.pixtral.image_processing_pil_pixtral import (
        PixtralImageProcessorPil,
    )

    if size.image_size % (size.patch_size * MERGE_SIZE):
        raise ConfigError(f"mistral3: image_size must be a multiple of patch_size * {MERGE_SIZE}")
    # Tekken, Mistral's tokenizer, is a byte-level BPE.
    tokenizer = byte_level_tokenizer(
        size, CONTROLS, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    ids = special_ids(tokenizer, CONTROLS)
    config = Mistral3Config(
        vision_config={
            "model_type": "pixtral",
            "hidden_size": size.vision_hidden_size,
            "intermediate_size": 4 * size.vision_hidden_size,
            "num_hidden_layers": size.vision_num_hidden_layers,
            "num_attention_heads": size.vision_num_attention_heads,
            "head_dim": size.vision_hidden_size // size.vision_num_attention_heads,
            "image_size": size.image_size,
            "patch_size": size.patch_size,
        },
        text_config=MistralConfig(**language_model_fields(size, tokenizer), sliding_window=None),
        image_token_index=ids["[IMG]"],
        spatial_merge_size=MERGE_SIZE,
    )
    model = Mistral3ForConditionalGeneration(config)
    image_processor = PixtralImageProcessorPil(
        size={"longest_edge": size.image_size},
        patch_size={"height": size.patch_size, "width": size.patch_size},
    )
    processor = PixtralProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=size.patch_size,
        spatial_merge_size=MERGE_SIZE,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


# Images up to 64 px on the longer side in 8 px patches, merged 2x2: up to 4x4 [IMG] tokens.
FAMILY = Family(
    name="mistral3",
    reference="mistralai/Mistral-Small-3.1-24B-Instruct-2503",
    model_class="Mistral3ForConditionalGeneration",
    image_marker="[IMG]",
    build=build,
    default_size=TinySize(image_size=64),
)
