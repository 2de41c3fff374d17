"""Gemma 3 (google/gemma-3-4b-it): SigLIP, average-pooled to a fixed number of soft tokens
per image and projected into Gemma 3 (interleaved sliding and global attention, image
tokens attending to each other both ways)."""

from __future__ import annotations

from typing import Any

from bpo.errors import ConfigError
from bpo.tiny_models.common import (
    ALPHABET,
    Built,
    Family,
    TinySize,
    name_tokens,
    randomize,
    special_ids,
    train_tokenizer,
    within_words,
)

TURN_TOKENS = ["<start_of_turn>", "<end_of_turn>"]
IMAGE_TOKENS = {
    "image_token": "<image_soft_token>",
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
}

# gemma-3-4b-it's template (transformers' tests/models/gemma3 carry a near copy): BOS, a
# system message folded into the first user turn, "<start_of_turn>user\n...<end_of_turn>\n",
# the assistant as "model", images as <start_of_image> (the processor expands it), text
# trimmed.
CHAT_TEMPLATE = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
{%- if messages[0]['content'] is string -%}
{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
{%- else -%}
{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
{%- endif -%}
{%- set loop_messages = messages[1:] -%}
{%- else -%}
{%- set first_user_prefix = '' -%}
{%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
{%- endif -%}
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}
{%- if message['content'] is string -%}{{ message['content'] | trim }}
{%- else -%}{%- for item in message['content'] -%}
{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}
{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}
{%- endif -%}{%- endfor -%}{%- endif -%}
{{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}
"""


def gemma_tokenizer(size: TinySize, special_tokens: list[str], **named: Any) -> Any:
    """Gemma's tokenizer class (SentencePiece-style BPE), trained on the corpus; no BOS added.

    Args:
        size: gives the vocabulary target.
        special_tokens: control tokens, each one id.
        **named: named special tokens to set after training (``eos_token=...``, or the
            model-specific ones such as ``extra_special_tokens={"boi_token": ...}``).
    """
    from transformers import GemmaTokenizer

    base = within_words(GemmaTokenizer(add_bos_token=False, padding_side="left"))
    # Gemma's normalizer already turns spaces into "▁"; split before each one, adding none.
    base.backend_tokenizer.pre_tokenizer.prepend_scheme = "never"
    trained = train_tokenizer(base, size, special_tokens, initial_alphabet=ALPHABET)
    return name_tokens(trained, **named)


def build(size: TinySize) -> Built:
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    side = size.image_size // size.patch_size
    if size.image_size % size.patch_size or side % 2:
        raise ConfigError("gemma3: image_size / patch_size must be an even integer")
    # gemma-3-it ends a turn with <end_of_turn> and stops on it or <eos> (its generation
    # config); here <end_of_turn> is also the tokenizer's EOS, so templates and TRL agree.
    tokenizer = gemma_tokenizer(
        size,
        [*TURN_TOKENS, *IMAGE_TOKENS.values()],
        eos_token="<end_of_turn>",
        extra_special_tokens=IMAGE_TOKENS,
    )
    ids = special_ids(tokenizer, [*TURN_TOKENS, *IMAGE_TOKENS.values(), "<eos>"])
    head_dim = size.hidden_size // size.num_attention_heads
    # Gemma 3 pools the patch grid (64x64 at 896 px) to 16x16 soft tokens; halved here.
    tokens_per_image = (side // 2) ** 2
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        # One local layer then one global (gemma-3: five local per global, 1024-token window).
        layer_types=[
            "sliding_attention" if (layer + 1) % 2 else "full_attention"
            for layer in range(size.num_hidden_layers)
        ],
        sliding_window=512,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=ids["<end_of_turn>"],
        pad_token_id=tokenizer.pad_token_id,
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=SiglipVisionConfig(
            hidden_size=size.vision_hidden_size,
            intermediate_size=4 * size.vision_hidden_size,
            num_hidden_layers=size.vision_num_hidden_layers,
            num_attention_heads=size.vision_num_attention_heads,
            image_size=size.image_size,
            patch_size=size.patch_size,
            vision_use_head=False,
        ),
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
    )
    model = Gemma3ForConditionalGeneration(config)
    # Gemma 3 initialises the projector to zeros (`Gemma3PreTrainedModel._init_weights`):
    # fine before loading trained weights, but a random model would then ignore the image.
    randomize(model.model.multi_modal_projector.mm_input_projection_weight)
    model.generation_config.eos_token_id = [ids["<end_of_turn>"], ids["<eos>"]]
    image_processor = Gemma3ImageProcessorPil(
        size={"height": size.image_size, "width": size.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=tokens_per_image,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


# 64 px in 8 px patches (8x8), pooled to 4x4 = 16 soft tokens per image.
FAMILY = Family(
    name="gemma3",
    reference="google/gemma-3-4b-it",
    model_class="Gemma3ForConditionalGeneration",
    image_marker="<start_of_image>",
    build=build,
    default_size=TinySize(image_size=64),
)
