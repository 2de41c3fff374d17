"""What every tiny model shares: sizes, tokenizers trained offline, saving and loading back.

Special tokens come from the chat template only: no tokenizer here adds BOS or
EOS by itself (templates that start with BOS write it), so text rendered with
the template tokenizes the same with or without ``add_special_tokens`` (TRL
tokenizes with ``add_special_tokens=False``). Tokenizers pad on the left, as
batched generation with a decoder-only model needs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo import compat
from bpo.tiny_models.corpus import tokenizer_corpus

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, ProcessorMixin

Built = tuple["PreTrainedModel", "ProcessorMixin"]


@dataclass(frozen=True)
class TinySize:
    """Sizes of a tiny model; every field can be overridden by keyword.

    Each family reads the fields it has (e.g. Qwen2-VL keeps its own 14 px patches)
    and says in its module how it reads `image_size`.

    Attributes:
        hidden_size: width of the language model.
        num_hidden_layers: decoder layers of the language model.
        num_attention_heads: attention heads of the language model.
        num_key_value_heads: key/value heads (grouped-query attention, as in Qwen2).
        intermediate_size: MLP width of the language model.
        vision_hidden_size: width of the vision encoder.
        vision_num_hidden_layers: layers of the vision encoder.
        vision_num_attention_heads: attention heads of the vision encoder.
        vocab_size: target vocabulary of the BPE trainer (the corpus may give fewer).
        image_size: side of the (square) image or tile the vision tower sees; for the
            Qwen families, the side of the largest pixel budget (``max_pixels``); for
            Mistral 3, the longest edge.
        patch_size: side of the vision patches, where the family lets it change.
    """

    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    vision_hidden_size: int = 32
    vision_num_hidden_layers: int = 2
    vision_num_attention_heads: int = 4
    vocab_size: int = 1024
    image_size: int = 32
    patch_size: int = 8


@dataclass(frozen=True)
class Family:
    """One family of tiny models, as the registry in `bpo.tiny_models` lists it.

    Attributes:
        name: the registry name (``bpo tiny-model --arch NAME``).
        reference: the hub checkpoint whose config, processor and chat template it mirrors.
        model_class: the transformers class `AutoModelForImageTextToText` loads it as.
        image_marker: what the chat template writes for an image (before the processor
            expands it into image tokens).
        build: makes the random model and its processor from sizes (seeded by the caller).
        default_size: the sizes it is built at unless told otherwise.
        unavailable: why it cannot be built here, or None.
    """

    name: str
    reference: str
    model_class: str
    image_marker: str
    build: Callable[[TinySize], Built]
    default_size: TinySize = TinySize()
    unavailable: str | None = None


# --- tokenizers ----------------------------------------------------------------------

# Llama and Gemma fall back to byte tokens; ours have none, so the trainer is seeded with
# this alphabet (else every other character would become <unk>).
ALPHABET = [chr(code) for code in range(32, 127)] + list("\n\t’‘“”–—…éèàç°×")


def train_tokenizer(
    base: Any, size: TinySize, special_tokens: Sequence[str], **trainer: Any
) -> Any:
    """Train `base`'s pipeline (pre-tokenizer, decoder, special tokens) on the embedded corpus."""
    return base.train_new_from_iterator(
        [list(tokenizer_corpus())],
        vocab_size=size.vocab_size,
        new_special_tokens=list(special_tokens),
        show_progress=False,
        **trainer,
    )


def within_words(base: Any) -> Any:
    """`base` with a pre-tokenizer that learns merges within words only.

    On this small, repetitive corpus, merges across spaces (SentencePiece-style
    tokenizers see a whole sentence as one piece) would make sentences single tokens.
    """
    from tokenizers import pre_tokenizers

    base.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    return base


def byte_level_tokenizer(size: TinySize, special_tokens: Sequence[str], **tokens: str) -> Any:
    """A byte-level BPE tokenizer (GPT-4-style split, as Llama 3's and Mistral's Tekken)
    wrapped as `PreTrainedTokenizerFast`, the class of Llama 3's hub tokenizers.

    Args:
        size: gives the vocabulary target.
        special_tokens: control tokens, each one id.
        **tokens: the named special tokens (``bos_token="<s>"`` ...), each in `special_tokens`.
    """
    from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer

    # Qwen2's pre-tokenizer is Llama 3's cl100k-style regex + byte-level, except that it
    # splits numbers into single digits (Llama 3: groups of up to three).
    trained = train_tokenizer(Qwen2Tokenizer(), size, special_tokens)
    return PreTrainedTokenizerFast(
        tokenizer_object=trained.backend_tokenizer, padding_side="left", **tokens
    )


def name_tokens(tokenizer: Any, **named: Any) -> Any:
    """`tokenizer` re-made with more named special tokens (``extra_special_tokens={...}``).

    Training drops model-specific names (Gemma 3's ``boi_token``, InternVL's
    ``context_image_token`` ...) that processors read from the tokenizer; set here, they
    are saved in tokenizer_config.json and load back.
    """
    return type(tokenizer)(
        tokenizer_object=tokenizer.backend_tokenizer,
        padding_side=tokenizer.padding_side,
        **{**tokenizer.special_tokens_map, **named},
    )


def special_ids(tokenizer: Any, tokens: Sequence[str]) -> dict[str, int]:
    """The id of each of `tokens`; raises if one is not a single known token."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in tokens}
    unknown = tokenizer.unk_token_id
    missing = [
        token
        for token, id_ in ids.items()
        if id_ is None or (id_ == unknown and token != tokenizer.unk_token)
    ]
    if missing:
        raise RuntimeError(f"tokenizer lacks {missing}")  # a builder bug, not a user error
    return ids


def language_model_fields(size: TinySize, tokenizer: Any) -> dict[str, Any]:
    """The language model's sizes and the tokenizer's special ids, as Llama-style configs name them."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": size.hidden_size,
        "intermediate_size": size.intermediate_size,
        "num_hidden_layers": size.num_hidden_layers,
        "num_attention_heads": size.num_attention_heads,
        "num_key_value_heads": size.num_key_value_heads,
        "max_position_embeddings": 2048,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


# --- weights ---------------------------------------------------------------------------


def randomize(parameter: torch.Tensor, std: float = 0.02) -> None:
    """Overwrite a parameter that its family initialises to a constant with N(0, std) values.

    Used for weights that start at zero by design (a fresh gate, a zero projector): at
    zero the image cannot reach the logits of a random model, and the tests need it to.
    Draws from torch's global generator, which the builder has seeded.
    """
    import torch

    with torch.no_grad():
        parameter.normal_(0.0, std)


# --- processors --------------------------------------------------------------------------


def video_processor(class_name: str, **kwargs: Any) -> Any:
    """The real video processor where torchvision is installed, else the image-only stand-in."""
    compat.allow_processors_without_torchvision()
    if compat.torchvision_stand_in_active():
        return compat.image_only_video_processor_class()(video_processor_type=class_name, **kwargs)
    import transformers

    return getattr(transformers, class_name)(**kwargs)


# --- saving and loading back -------------------------------------------------------------


def save(
    model: PreTrainedModel, processor: ProcessorMixin, target: Path, meta: dict[str, Any]
) -> Path:
    """Write a standard checkpoint; `meta` (arch, seed, sizes) goes into config.json."""
    model.config.bpo_tiny_model = meta
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return target


def describe(arch: str, seed: int, size: TinySize) -> dict[str, Any]:
    """What `save` records about a build, so a checkpoint says how it was made."""
    return {"arch": arch, "seed": seed, **asdict(size)}


def load_tiny_model(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Load a checkpoint the standard way: `AutoModelForImageTextToText` and `AutoProcessor`.

    Applies `allow_processors_without_torchvision` first (a no-op with torchvision), as
    every bpo loader does, so processors with a video part load for images.
    """
    compat.allow_processors_without_torchvision()
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)
