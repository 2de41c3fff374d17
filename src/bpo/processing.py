"""A family's model inputs, made by its own processor; what bpo adds to them, in one place.

Every input a model sees in bpo is made by the checkpoint's processor,
``processor(text=..., images=...)``, so its own settings apply: InternVL's
``crop_to_patches``, Pixtral's rounding of image sizes to whole patches, Mllama's
``cross_attention_mask``, PaliGemma's prefix ``token_type_ids`` ... Training
(`bpo.train.collator`) and generation (`bpo.backends.hf`) share the few things a
processor cannot decide:

- how to prompt a checkpoint that ships no chat template: PaliGemma, whose documented
  format is ``<image>...<bos>prefix\\n`` then the answer (`chat_template`);
- what each per-token output means over text appended after the prompt, a response
  tokenized once (`extend_per_token`, `padding_value`);
- which strings are control tokens, that text from a dataset must not write
  (`control_tokens`), and which one ends an assistant's turn (`end_of_turn_token`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bpo.errors import BpoError, ConfigError

# PaliGemma's prompt format (big_vision's PaliGemma README; transformers'
# models/paligemma/processing_paligemma.py builds "<image>" * n + "<bos>" + prefix + "\n",
# and the answer after it as the "suffix", closed by EOS). The checkpoints ship no chat
# template; this one renders a conversation in that form: every image first, then the
# turns' text ('\n' between turns), each earlier answer preceded by '\n' and closed by EOS.
# A prompt is then a prefix of itself with its answer: the generation prompt adds nothing,
# the processor's newline starts the answer. The tiny PaliGemma ships this same text.
PALIGEMMA_PROMPT_FORMAT = r"""{%- for message in messages -%}
{%- if message['content'] is not string -%}
{%- for part in message['content'] | selectattr('type', 'equalto', 'image') -%}{{ '<image>' }}{%- endfor -%}
{%- endif -%}
{%- endfor -%}
{%- for message in messages -%}
{%- if message['content'] is string -%}{%- set text = message['content'] -%}
{%- else -%}{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}
{%- endif -%}
{%- if message['role'] == 'assistant' -%}{{ '\n' + text + eos_token }}
{%- else -%}{%- if not loop.first -%}{{ '\n' }}{%- endif -%}{{ text }}
{%- endif -%}
{%- endfor -%}
"""

# Outputs with one entry per token (dimension 1 runs along the sequence, after the batch).
# Every other output of a processor is an image input (pixel_values, image_sizes,
# image_grid_thw, pixel_attention_mask, aspect_ratio_ids ...), one row per image or sample.
PER_TOKEN_KEYS = ("attention_mask", "token_type_ids", "mm_token_type_ids", "cross_attention_mask")
# The per-token types: Gemma 3 and PaliGemma's token_type_ids, the mm_token_type_ids of
# Qwen2-VL and others in transformers 5 (0 text, 1 image, 2 video).
TOKEN_TYPE_KEYS = ("token_type_ids", "mm_token_type_ids")
# PaliGemma's processor returns labels for its suffix; training and scoring make their own.
DROPPED_KEYS = ("labels",)


def is_prefix_lm(processor: Any) -> bool:
    """Whether the processor's model reads its prompt as a bidirectional prefix (PaliGemma).

    Its processor marks prompt tokens 0 and answer ("suffix") tokens 1 in
    ``token_type_ids``; the model (modeling_paligemma.py: ``block_sequence_ids =
    where(token_type_ids == 0, 0, -1)``) lets type-0 tokens attend to each other both
    ways and type-1 tokens causally.
    """
    from transformers import PaliGemmaProcessor

    return isinstance(processor, PaliGemmaProcessor)


def chat_template(processor: Any) -> str:
    """The template that renders conversations for `processor`'s model.

    The checkpoint's own; for PaliGemma checkpoints, which ship none, its documented
    prompt format (`PALIGEMMA_PROMPT_FORMAT`).

    Raises:
        ConfigError: for any other processor without a chat template.
    """
    template = getattr(processor, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default")
    if template:
        return str(template)
    if is_prefix_lm(processor):
        return PALIGEMMA_PROMPT_FORMAT
    raise ConfigError(
        f"{type(processor).__name__} has no chat template: bpo renders prompts with the "
        "checkpoint's chat template (set processor.chat_template or use an instruct checkpoint)"
    )


def message_text(messages: Any) -> str:
    """The text of a response: a string, or the text parts of its message(s), joined."""
    if isinstance(messages, str):
        return messages
    if isinstance(messages, dict):
        messages = [messages]
    texts = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(part["text"] for part in content if part.get("type") == "text")
    return "".join(texts)


def split_outputs(outputs: Any, input_ids: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A processor's outputs as (per-token outputs, image inputs), ``input_ids`` and labels left out.

    Raises:
        BpoError: for an output that is not a tensor, or an unknown one that runs along the
            tokens (bpo would not know what it means over a response).
    """
    import torch

    per_token: dict[str, Any] = {}
    images: dict[str, Any] = {}
    for key, value in outputs.items():
        if key == "input_ids" or key in DROPPED_KEYS:
            continue
        if not isinstance(value, torch.Tensor):
            raise BpoError(
                f"the processor's output {key!r} is a {type(value).__name__}, not a tensor"
            )
        if key in PER_TOKEN_KEYS:
            per_token[key] = value
        elif value.dim() >= 2 and tuple(value.shape[:2]) == tuple(input_ids.shape):
            raise BpoError(
                f"the processor's output {key!r} has one entry per token, and bpo does not know "
                "what it means over a response; add it to bpo.processing.PER_TOKEN_KEYS"
            )
        else:
            images[key] = value
    return per_token, images


def appended_token_type(processor: Any) -> int:
    """The ``token_type_ids`` value of a response token.

    Gemma 3 marks image tokens 1 and text 0 (modeling_gemma3.py: image blocks attend both
    ways); PaliGemma marks its answer 1, causal after the bidirectional prefix (see
    `is_prefix_lm`). TRL's collator writes 0 for both, which lets a PaliGemma answer see its
    own future tokens.
    """
    return 1 if is_prefix_lm(processor) else 0


def extend_per_token(processor: Any, key: str, rows: Any, count: int) -> Any:
    """One sequence's per-token output `rows` (T, ...), extended over `count` appended text tokens.

    Each value is what the processor gives such a token when it tokenizes prompt and
    response together:

    - ``attention_mask``: 1;
    - ``token_type_ids``: `appended_token_type`; ``mm_token_type_ids``: 0, text
      (processing_utils.py, ``create_mm_token_type_ids``);
    - ``cross_attention_mask`` (Mllama): the row of the prompt's last token. Text after an
      image attends to it up to the next image or the end of the sequence
      (processing_mllama.py, ``get_cross_attention_token_mask``); a response holds no image.
    """
    import torch

    if count == 0:
        return rows
    if key == "cross_attention_mask":
        tail = rows[-1:].expand(count, *rows.shape[1:])
    else:
        value = {
            "attention_mask": 1,
            "token_type_ids": appended_token_type(processor),
            "mm_token_type_ids": 0,
        }[key]
        tail = torch.full((count, *rows.shape[1:]), value, dtype=rows.dtype, device=rows.device)
    return torch.cat([rows, tail])


def padding_value(processor: Any, key: str) -> int:
    """What a per-token output holds on padding: 0 (masked), a response's type for token types."""
    if key == "token_type_ids":
        return appended_token_type(processor)
    return 0


def control_tokens(processor: Any) -> tuple[str, ...]:
    """The strings that encode as control tokens: the tokenizer's special added tokens and the
    processor's multimodal placeholders. Text from a dataset must not write them."""
    tokenizer = getattr(processor, "tokenizer", processor)
    found = {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
    for name in ("image_token", "video_token", "audio_token", "boi_token"):
        token = getattr(processor, name, None)
        if isinstance(token, str) and token:
            found.add(token)
    return tuple(sorted(found, key=len, reverse=True))


def control_tokens_in(
    conversations: Iterable[list[dict[str, Any]]], tokens: Iterable[str]
) -> list[str]:
    """The control `tokens` that the text of `conversations` holds (typed parts or strings)."""
    texts = []
    for messages in conversations:
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                texts.append(content)
            else:
                texts.extend(part["text"] for part in content if part.get("type") == "text")
    return sorted({token for token in tokens for text in texts if token in text})


def end_of_turn_token(processor: Any, template: str) -> str | None:
    """The control token that `template` writes right after an assistant's text, or None.

    The token generation must stop at: Gemma's ``<end_of_turn>``, Llama 3's ``<|eot_id|>``,
    Qwen's ``<|im_end|>``, Idefics3's ``<end_of_utterance>``, LLaVA's ``</s>`` ...
    """
    answer = "Fine"
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": answer}]
    try:
        rendered = processor.apply_chat_template(chat, chat_template=template, tokenize=False)
    except Exception:  # a template that cannot render this chat: no end of turn to read
        return None
    if answer not in rendered:
        return None
    tail = rendered[rendered.rindex(answer) + len(answer) :]
    tokenizer = getattr(processor, "tokenizer", processor)
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    if not ids:
        return None
    token = tokenizer.convert_ids_to_tokens(ids[0])
    return token if token in control_tokens(processor) else None
