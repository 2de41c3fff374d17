"""Tiny random vision-language models, built offline, for tests and smoke runs.

`build_tiny_model("llava" | "qwen2-vl", out_dir)` writes a complete checkpoint
(safetensors weights, config, generation config, processor, tokenizer, chat
template) that `AutoModelForImageTextToText.from_pretrained(out_dir)` and
`AutoProcessor.from_pretrained(out_dir)` load back exactly like a hub
checkpoint, so CPU tests run the code path of llava-1.5-7b or Qwen2-VL-7B. The
idea follows TRL's tiny test models (huggingface/trl,
scripts/generate_tiny_models.py), except that nothing comes from the hub: the
tokenizer is trained here on a small embedded English corpus and the weights are
random (seeded).

Special tokens come from the chat template only: the LLaVA tokenizer does not add
BOS by itself (its template starts with it), so text rendered with the template
tokenizes the same with or without ``add_special_tokens`` (TRL tokenizes with
``add_special_tokens=False``). Tokenizers pad on the left, as batched generation
with a decoder-only model needs.

Qwen2-VL's processor needs a video processor, and transformers 5 builds every
video processor on torchvision (transformers issue #48558). Where torchvision is
missing (the CPU set-up: the PyPI wheel would replace the CPU torch),
`allow_processors_without_torchvision` lets such processors load for images
only; it is a no-op where torchvision is installed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo import compat
from bpo.errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image
    from transformers import PreTrainedModel, ProcessorMixin

ARCHES = ("llava", "qwen2-vl")


@dataclass(frozen=True)
class TinySize:
    """Sizes of a tiny model; every field can be overridden by keyword.

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
        image_size: LLaVA: side of the square image the vision tower sees. Qwen2-VL:
            side of the largest square pixel budget (``max_pixels = image_size**2``).
        patch_size: LLaVA: side of the CLIP patches (Qwen2-VL keeps its own 14 px).
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


# LLaVA: 32 px images in 8 px patches give 16 image tokens (llava-1.5 uses 336/14 -> 576).
# Qwen2-VL: 14 px patches merged 2x2 (as in Qwen2-VL); 84x84 px at most gives 4 to 9 tokens.
_DEFAULT_SIZES = {"llava": TinySize(image_size=32), "qwen2-vl": TinySize(image_size=84)}
_QWEN_PATCH_SIZE = 14
_QWEN_MERGE_SIZE = 2
_QWEN_TEMPORAL_PATCH_SIZE = 2


# --- tokenizer corpus -----------------------------------------------------------------

# The 80 object categories of COCO (Lin et al. 2014), the vocabulary of POPE and CHAIR.
COCO_OBJECTS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
_COLOURS = ("red", "green", "blue", "yellow", "black", "white", "brown", "gray", "orange",
            "pink", "purple")  # fmt: skip
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10")  # fmt: skip
_PLACES = ("on the left", "on the right", "in the middle", "at the top", "at the bottom",
           "next to the table", "in front of the wall", "behind the chair", "near the window")  # fmt: skip
_QUESTIONS = (
    "Is there a {o} in the image?",
    "Is there a {o} in the picture? Answer yes or no.",
    "How many {o}s are in the image?",
    "What color is the {o}?",
    "Where is the {o}?",
    "What is the man holding?",
    "Which object is next to the {o}?",
    "Why is the {o} here?",
    "Who is sitting near the {o}?",
    "Describe the image in detail.",
    "What do you see in this photo?",
)
_ANSWERS = (
    "Yes, there is a {c} {o} {p}.",
    "No, there is no {o} in the image.",
    "There are {n} {o}s {p}.",
    "The {o} is {c}.",
    "The image shows a {c} {o} {p}, and a person is standing beside it.",
    "I see {n} {o}s and a {c} cup; the scene looks like a kitchen.",
)


def tokenizer_corpus() -> Iterator[str]:
    """A small English corpus: COCO objects, colours, numbers, places, questions and answers.

    Deterministic, so the same seed always gives the same tokenizer.
    """
    for index, obj in enumerate(COCO_OBJECTS):
        colour = _COLOURS[index % len(_COLOURS)]
        number = _NUMBERS[index % len(_NUMBERS)]
        place = _PLACES[index % len(_PLACES)]
        for template in (*_QUESTIONS, *_ANSWERS):
            yield template.format(o=obj, c=colour, n=number, p=place)
    yield " ".join((*_COLOURS, *_NUMBERS, "yes", "no", "Yes", "No", "USER", "ASSISTANT"))


# --- chat templates ----------------------------------------------------------------------

# Both templates render string content and the multimodal list form
# [{"type": "image"}, {"type": "text", "text": ...}], close every assistant turn with the
# end-of-turn token (so TRL's DPO can cut chosen/rejected off the prompt) and honour
# add_generation_prompt. Newlines are written as {{ '\n' }}: transformers renders with
# trim_blocks.

# LLaVA-1.5 ("llava_v1" conversation of haotian-liu/LLaVA): "USER: <image>\n... ASSISTANT: ...</s>".
LLAVA_CHAT_TEMPLATE = r"""{%- macro render(content) -%}
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

# Qwen2-VL-Instruct (ChatML with vision markers and its default system prompt).
QWEN2_VL_CHAT_TEMPLATE = r"""{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for part in content -%}
{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}
{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}
{%- elif part['type'] == 'text' -%}{{ part['text'] }}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- if messages[0]['role'] != 'system' -%}
{{- '<|im_start|>system' }}{{ '\n' }}{{ 'You are a helpful assistant.<|im_end|>' }}{{ '\n' }}
{%- endif -%}
{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] }}{{ '\n' }}{{ render(message['content']) + '<|im_end|>' }}{{ '\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant' }}{{ '\n' }}{%- endif -%}
"""


# --- builders --------------------------------------------------------------------------


def _train_tokenizer(base: Any, size: TinySize, special_tokens: list[str], **trainer: Any) -> Any:
    """Train `base`'s pipeline (pre-tokenizer, decoder, special tokens) on the embedded corpus."""
    return base.train_new_from_iterator(
        [list(tokenizer_corpus())],
        vocab_size=size.vocab_size,
        new_special_tokens=special_tokens,
        show_progress=False,
        **trainer,
    )


def _build_llava(size: TinySize) -> tuple[PreTrainedModel, ProcessorMixin]:
    from tokenizers import pre_tokenizers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlamaTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    if size.image_size % size.patch_size:
        raise ConfigError(f"llava: image_size must be a multiple of {size.patch_size}")
    # BOS comes from the chat template (see the module docstring). Left padding: decoder-only
    # generation continues the right end of a batch.
    base = LlamaTokenizer(add_bos_token=False, add_eos_token=False, padding_side="left")
    # Learn merges within words only: on this small, repetitive corpus, merges across spaces
    # would make whole sentences single tokens.
    base.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    # Llama falls back to byte tokens; ours has none, so seed the alphabet (else <unk>).
    alphabet = [chr(code) for code in range(32, 127)] + list("\n\t’‘“”–—…éèàç°×")
    tokenizer = _train_tokenizer(base, size, ["<image>", "<pad>"], initial_alphabet=alphabet)
    tokenizer.backend_tokenizer.model.unk_token = "<unk>"  # rather than dropping other characters
    tokenizer.pad_token = "<pad>"

    # As llava-1.5-7b-hf: the CLS position is counted (+1) then dropped by the "default" strategy.
    num_patches = (size.image_size // size.patch_size) ** 2
    vision_config = CLIPVisionConfig(
        hidden_size=size.vision_hidden_size,
        intermediate_size=4 * size.vision_hidden_size,
        projection_dim=size.vision_hidden_size,
        num_hidden_layers=size.vision_num_hidden_layers,
        num_attention_heads=size.vision_num_attention_heads,
        image_size=size.image_size,
        patch_size=size.patch_size,
    )
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=num_patches,
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
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return model, processor


_QWEN_SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _build_qwen2_vl(size: TinySize) -> tuple[PreTrainedModel, ProcessorMixin]:
    compat.allow_processors_without_torchvision()
    from transformers import (
        Qwen2Tokenizer,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    factor = _QWEN_PATCH_SIZE * _QWEN_MERGE_SIZE
    if size.image_size < 2 * factor:
        raise ConfigError(f"qwen2-vl: image_size must be at least {2 * factor}")
    head_dim = size.hidden_size // size.num_attention_heads
    if head_dim % 2 or size.hidden_size % size.num_attention_heads:
        raise ConfigError("qwen2-vl: hidden_size / num_attention_heads must be an even integer")

    # As Qwen2-VL-Instruct: <|endoftext|> pads, <|im_end|> ends a turn, no BOS.
    tokenizer = _train_tokenizer(
        Qwen2Tokenizer(eos_token="<|im_end|>", padding_side="left"), size, _QWEN_SPECIAL_TOKENS
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in _QWEN_SPECIAL_TOKENS}

    # Multimodal RoPE splits half the head dimension over (time, height, width); Qwen2-VL
    # uses [16, 24, 24] of 64. Same proportions here, the remainder going to time.
    spatial = 3 * (head_dim // 2) // 8
    mrope_section = [head_dim // 2 - 2 * spatial, spatial, spatial]
    rope = {"rope_type": "default", "mrope_section": mrope_section, "rope_theta": 1_000_000.0}
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": size.hidden_size,
            "intermediate_size": size.intermediate_size,
            "num_hidden_layers": size.num_hidden_layers,
            "num_attention_heads": size.num_attention_heads,
            "num_key_value_heads": size.num_key_value_heads,
            "max_position_embeddings": 2048,
            "rope_parameters": rope,
            "bos_token_id": None,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": size.vision_num_hidden_layers,
            "embed_dim": size.vision_hidden_size,
            "num_heads": size.vision_num_attention_heads,
            "hidden_size": size.hidden_size,  # the merger projects into the language model
            "mlp_ratio": 2,
            "patch_size": _QWEN_PATCH_SIZE,
            "spatial_merge_size": _QWEN_MERGE_SIZE,
            "temporal_patch_size": _QWEN_TEMPORAL_PATCH_SIZE,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2VLForConditionalGeneration(config)
    # Stop on either end marker, as Qwen2-VL-Instruct's generation config does.
    model.generation_config.eos_token_id = [ids["<|im_end|>"], tokenizer.pad_token_id]

    # Images of 2x2 merged tokens at least (Qwen2-VL's 56x56 px minimum) and image_size**2 px at most.
    geometry: dict[str, Any] = {
        "min_pixels": (2 * factor) ** 2,
        "max_pixels": size.image_size**2,
        "patch_size": _QWEN_PATCH_SIZE,
        "merge_size": _QWEN_MERGE_SIZE,
        "temporal_patch_size": _QWEN_TEMPORAL_PATCH_SIZE,
    }
    image_processor = Qwen2VLImageProcessorPil(**geometry)
    video_processor = _video_processor("Qwen2VLVideoProcessor", **geometry)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    return model, processor


def _video_processor(class_name: str, **kwargs: Any) -> Any:
    """The real video processor where torchvision is installed, else the image-only stand-in."""
    if compat.torchvision_stand_in_active():
        return compat.image_only_video_processor_class()(video_processor_type=class_name, **kwargs)
    import transformers

    return getattr(transformers, class_name)(**kwargs)


_BUILDERS = {"llava": _build_llava, "qwen2-vl": _build_qwen2_vl}


def tiny_size(arch: str, **overrides: int) -> TinySize:
    """The default sizes of `arch` with `overrides` applied; unknown names raise `ConfigError`."""
    if arch not in _BUILDERS:
        raise ConfigError(f"unknown tiny-model arch {arch!r}; valid: {', '.join(ARCHES)}")
    valid = {field.name for field in fields(TinySize)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(
            f"unknown tiny-model size {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    for name, value in overrides.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"tiny-model size {name} must be a positive integer, got {value!r}")
    return replace(_DEFAULT_SIZES[arch], **overrides)


def build_tiny_model(
    arch: str, out_dir: str | os.PathLike[str], *, seed: int = 0, **sizes: int
) -> Path:
    """Build a tiny random VLM from configs and save it as a standard checkpoint.

    Args:
        arch: ``"llava"`` (LLaVA-1.5: CLIP vision tower, Llama language model) or
            ``"qwen2-vl"``.
        out_dir: the folder to write (created; files of an earlier build are overwritten).
        seed: seeds the weights; the same seed gives identical weights.
        **sizes: overrides of `TinySize` fields, e.g. ``hidden_size=32``.

    Returns:
        The checkpoint folder, loadable with ``AutoModelForImageTextToText`` and
        ``AutoProcessor`` (for Qwen2-VL without torchvision, after
        `allow_processors_without_torchvision`).

    Raises:
        ConfigError: an unknown arch or size, or an `out_dir` that is not a folder.
    """
    size = tiny_size(arch, **sizes)
    target = Path(out_dir)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"tiny-model output {target} exists and is not a folder")
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = _BUILDERS[arch](size)
    model.config.bpo_tiny_model = {"arch": arch, "seed": seed, **asdict(size)}
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return target


# --- smoke check ------------------------------------------------------------------------


def synthetic_image(size: int = 64) -> Image.Image:
    """A small RGB test card (colour gradient and a disc), made without any data file."""
    import numpy as np
    from PIL import Image

    axis = np.linspace(0.0, 1.0, size)
    red, green = np.meshgrid(axis, axis[::-1])
    disc = (red - 0.5) ** 2 + (green - 0.5) ** 2 < 0.08
    pixels = np.stack([red, green, disc.astype(float)], axis=-1)
    return Image.fromarray((pixels * 255).astype(np.uint8), mode="RGB")


@dataclass(frozen=True)
class SmokeResult:
    """What `smoke_test` saw: model size, timings and the generated text."""

    parameters: int
    load_seconds: float
    generate_seconds: float
    new_tokens: int
    text: str


def smoke_test(
    path: str | os.PathLike[str],
    *,
    question: str = "What is in the image?",
    max_new_tokens: int = 8,
) -> SmokeResult:
    """Load a checkpoint the standard way and answer `question` about a synthetic image."""
    compat.allow_processors_without_torchvision()
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    start = time.perf_counter()
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    loaded = time.perf_counter()
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(
        images=[synthetic_image()], text=[prompt], add_special_tokens=False, return_tensors="pt"
    )
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    return SmokeResult(
        parameters=sum(parameter.numel() for parameter in model.parameters()),
        load_seconds=loaded - start,
        generate_seconds=time.perf_counter() - loaded,
        new_tokens=int(new_tokens.numel()),
        text=processor.decode(new_tokens, skip_special_tokens=True),
    )
