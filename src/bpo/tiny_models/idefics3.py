"""Idefics3 (HuggingFaceM4/Idefics3-8B-Llama3): a SigLIP-style encoder over image tiles plus
a global view, pixel shuffle (scale factor 2) into Llama 3; each tile's tokens are framed
by <fake_token_around_image> and a <row_i_col_j> tag.

Also the parts SmolVLM shares with it (tokens, chat template, image geometry).
"""

from __future__ import annotations

from typing import Any

from bpo.errors import ConfigError
from bpo.tiny_models.common import (
    Built,
    Family,
    TinySize,
    byte_level_tokenizer,
    language_model_fields,
    special_ids,
)

SCALE_FACTOR = 2  # pixel shuffle: each 2x2 block of patch features becomes one token
# The tags of a tile grid up to 6x6, as the processors look them up.
ROW_COL_TOKENS = [f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)]
IMAGE_TOKENS = ["<fake_token_around_image>", "<image>", "<global-img>", *ROW_COL_TOKENS]


def chat_template(start: str) -> str:
    """The template of Idefics3-8B-Llama3 and SmolVLM, which differ in the opening token only.

    "User:<image>Describe it.<end_of_utterance>\\nAssistant: ...<end_of_utterance>\\n", a
    colon without a space when the turn opens with an image (the hub templates; transformers'
    processor tests keep copies). String content is rendered too.
    """
    return r"""{{- 'START' -}}
{%- for message in messages -%}
{%- if message['content'] is string -%}
{%- set parts = [{'type': 'text', 'text': message['content']}] -%}
{%- else -%}{%- set parts = message['content'] -%}{%- endif -%}
{{- message['role'] | capitalize -}}
{%- if parts[0]['type'] == 'image' -%}{{ ':' }}{%- else -%}{{ ': ' }}{%- endif -%}
{%- for part in parts -%}
{%- if part['type'] == 'text' -%}{{ part['text'] }}
{%- elif part['type'] == 'image' -%}{{ '<image>' }}
{%- endif -%}{%- endfor -%}
{{- '<end_of_utterance>' }}{{ '\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ 'Assistant:' }}{%- endif -%}
""".replace("START", start)


def image_geometry(size: TinySize) -> dict[str, Any]:
    """Tiles of image_size px, images resized to at most 2x2 tiles (Idefics3: 364 px, 4x4)."""
    if size.image_size % (size.patch_size * SCALE_FACTOR):
        raise ConfigError(
            f"image_size must be a multiple of patch_size * {SCALE_FACTOR} for the pixel shuffle"
        )
    return {
        "size": {"longest_edge": 2 * size.image_size},
        "max_image_size": {"longest_edge": size.image_size},
    }


def image_seq_len(size: TinySize) -> int:
    """Tokens per tile after the pixel shuffle (Idefics3: (364/14)**2 / 4 = 169)."""
    return (size.image_size // size.patch_size) ** 2 // SCALE_FACTOR**2


def vision_config(size: TinySize) -> dict[str, Any]:
    return {
        "hidden_size": size.vision_hidden_size,
        "intermediate_size": 4 * size.vision_hidden_size,
        "num_hidden_layers": size.vision_num_hidden_layers,
        "num_attention_heads": size.vision_num_attention_heads,
        "image_size": size.image_size,
        "patch_size": size.patch_size,
    }


def build(size: TinySize) -> Built:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    controls = ["<|begin_of_text|>", "<|end_of_text|>", "<end_of_utterance>", "<|pad|>"]
    # Llama 3's tokenizer; turns end with <end_of_utterance>, which is EOS here.
    tokenizer = byte_level_tokenizer(
        size,
        [*controls, *IMAGE_TOKENS],
        bos_token="<|begin_of_text|>",
        eos_token="<end_of_utterance>",
        pad_token="<|pad|>",
    )
    ids = special_ids(tokenizer, [*controls, "<image>"])
    config = Idefics3Config(
        vision_config=vision_config(size),
        text_config={"model_type": "llama", **language_model_fields(size, tokenizer)},
        scale_factor=SCALE_FACTOR,
        image_token_id=ids["<image>"],
    )
    model = Idefics3ForConditionalGeneration(config)
    # Idefics3-8B-Llama3 stops on <end_of_utterance> or Llama 3's end of text.
    model.generation_config.eos_token_id = [ids["<end_of_utterance>"], ids["<|end_of_text|>"]]
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(**image_geometry(size)),
        tokenizer=tokenizer,
        image_seq_len=image_seq_len(size),
        chat_template=chat_template("<|begin_of_text|>"),
    )
    return model, processor


# 32 px tiles in 8 px patches: 4 tokens per tile; up to 2x2 tiles and the global view.
FAMILY = Family(
    name="idefics3",
    reference="HuggingFaceM4/Idefics3-8B-Llama3",
    model_class="Idefics3ForConditionalGeneration",
    image_marker="<image>",
    build=build,
    default_size=TinySize(image_size=32),
)
