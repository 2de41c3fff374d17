"""Llama 3.2 Vision (meta-llama/Llama-3.2-11B-Vision-Instruct, "mllama"): a two-stage ViT
over up to 4 tiles (local layers, then gated global layers, with intermediate features
concatenated), read by Llama 3 through gated cross-attention layers; the prompt holds a
single <|image|> token per image."""

from __future__ import annotations

from bpo.errors import ConfigError
from bpo.tiny_models.common import (
    Built,
    Family,
    TinySize,
    byte_level_tokenizer,
    randomize,
    special_ids,
)

CONTROLS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|image|>",
    "<|python_tag|>",
    "<|finetune_right_pad_id|>",
]

# Llama-3.2-Vision-Instruct's template for plain chats: "<|start_header_id|>role
# <|end_header_id|>\n\n...<|eot_id|>" turns after BOS, images as <|image|>. The hub
# template also handles tools and, for chats without images, writes a default system
# message with knowledge and current dates; both are left out.
CHAT_TEMPLATE = r"""{{- bos_token -}}
{%- for message in messages -%}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}{{ '\n\n' }}
{%- if message['content'] is string -%}{{ message['content'] | trim }}
{%- else -%}{%- for part in message['content'] -%}
{%- if part['type'] == 'image' -%}{{ '<|image|>' }}
{%- elif part['type'] == 'text' -%}{{ part['text'] | trim }}
{%- endif -%}{%- endfor -%}{%- endif -%}
{{- '<|eot_id|>' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>' }}{{ '\n\n' }}{%- endif -%}
"""


def build(size: TinySize) -> Built:
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    if size.image_size % size.patch_size:
        raise ConfigError(f"mllama: image_size must be a multiple of {size.patch_size}")
    tokenizer = byte_level_tokenizer(
        size,
        CONTROLS,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
    )
    ids = special_ids(tokenizer, CONTROLS)
    # Each vision layer's features go into the projection with the last one's
    # (Llama 3.2 Vision: layers 3, 7, 15, 23, 30 of 32, so 5 + 1 widths).
    intermediate = list(range(size.vision_num_hidden_layers))
    vision = {
        "hidden_size": size.vision_hidden_size,
        "intermediate_size": 4 * size.vision_hidden_size,
        "num_hidden_layers": size.vision_num_hidden_layers,
        "num_global_layers": 1,  # Llama 3.2 Vision: 8 gated global layers
        "attention_heads": size.vision_num_attention_heads,
        "image_size": size.image_size,
        "patch_size": size.patch_size,
        "max_num_tiles": 4,
        "intermediate_layers_indices": intermediate,
        "vision_output_dim": size.vision_hidden_size * (len(intermediate) + 1),
    }
    # The cross-attention layers sit between the self-attention layers (Llama 3.2 Vision:
    # 8 of its 40 layers, from the 4th on); here one, after the first self-attention layer.
    layers = size.num_hidden_layers + 1
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": size.hidden_size,
        "intermediate_size": size.intermediate_size,
        "num_hidden_layers": layers,
        "num_attention_heads": size.num_attention_heads,
        "num_key_value_heads": size.num_key_value_heads,
        "cross_attention_layers": [1],
        "max_position_embeddings": 2048,
        "bos_token_id": ids["<|begin_of_text|>"],
        "eos_token_id": ids["<|eot_id|>"],
        "pad_token_id": ids["<|finetune_right_pad_id|>"],
    }
    config = MllamaConfig(
        vision_config=vision, text_config=text, image_token_index=ids["<|image|>"]
    )
    model = MllamaForConditionalGeneration(config)
    # Mllama initialises the cross-attention gates to 0 (`MllamaPreTrainedModel._init_weights`),
    # so that training starts from the text model; a random model would then ignore the
    # image. Scale 1: their tanh lets the image through without drowning the text.
    for layer in model.model.language_model.layers:
        if hasattr(layer, "cross_attn_attn_gate"):
            randomize(layer.cross_attn_attn_gate, std=1.0)
            randomize(layer.cross_attn_mlp_gate, std=1.0)
    # Llama-3.2-Vision-Instruct stops on end of text, end of message or end of turn.
    model.generation_config.eos_token_id = [
        ids["<|end_of_text|>"],
        ids["<|eom_id|>"],
        ids["<|eot_id|>"],
    ]
    processor = MllamaProcessor(
        image_processor=MllamaImageProcessorPil(
            size={"height": size.image_size, "width": size.image_size}, max_image_tiles=4
        ),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


# Tiles of 32 px in 8 px patches (16 + a class token each), up to 4 tiles per image.
FAMILY = Family(
    name="mllama",
    reference="meta-llama/Llama-3.2-11B-Vision-Instruct",
    model_class="MllamaForConditionalGeneration",
    image_marker="<|image|>",
    build=build,
    default_size=TinySize(image_size=32),
)
