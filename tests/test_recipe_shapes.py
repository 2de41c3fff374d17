"""Every model recipe checked against the real shape of its model, offline and in seconds.

No weights or hub files can be fetched here, so each checkpoint's shape is recorded below as
numbers, each with where it was read. For every model recipe the test

- builds the family's transformers config class with those numbers and the model on the
  meta device (no memory allocated), through ``AutoModelForImageTextToText.from_config``
  with the recipe's ``model.attn_implementation`` (transformers refuses one the
  architecture does not support), and checks that the model has the recorded width,
  depth, heads and vocabulary, and, where a source states it, the parameter count;
- builds the LoRA config with bpo's own `bpo.train.model.peft_config` (which refuses target
  names that are not linear layers of the language model) and matches it with PEFT's own
  matcher: every decoder layer gets every target, and no module of the vision tower does,
  although the tower has linear layers of the same names;
- loads the processor with bpo's own `bpo.train.model.load_processor` and the recipe's
  ``model.processor_kwargs``, over the family's processor classes (those of
  `bpo.tiny_models`, with a tiny tokenizer) set up with the hub's preprocessor values:
  each kwarg must be one the image processor accepts, and the value it then holds;
- counts, with that processor, the most tokens an image takes in a prompt, over images of
  several sizes and shapes, with and without the recipe's kwargs (both recorded), and
  checks that it leaves `TEXT_ROOM` of ``data.max_length``.

Where a value could not be read from the checkpoint's own hub files (gated repositories, or
files not stored where search reaches), the comment says what it was read from instead.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from bpo.config import Recipe, load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

# What data.max_length must hold beyond the image: a 512-token response (the release keeps
# responses under 350 words, pairs.max_words) and a 128-token question.
TEXT_ROOM = 640

# Images the token count runs over: a large square (OneVision's largest grids; SmolVLM
# upscales to its longest edge anyway), the sizes that fill a Qwen pixel budget exactly
# (1120 x 896 = 1280 tokens of 28 px; 1280 x 1024 = 1280 of 32 px), a COCO photo upright,
# and a panorama (InternVL's widest tiling).
IMAGE_SIZES = ((1200, 1200), (1120, 896), (1280, 1024), (480, 640), (1536, 384))

# The language model's attention and MLP projections: their names in every family here.
PROJECTIONS = frozenset(
    {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
)
# The vision towers' names among them: SigLIP's, CLIP's and InternViT's attention projections.
VIT_QKV = frozenset({"q_proj", "k_proj", "v_proj"})
# OneVision's any-resolution grids: every (rows, cols) of 384 px tiles up to 6 x 6.
ONEVISION_PINPOINTS = [[384 * rows, 384 * cols] for rows in range(1, 7) for cols in range(1, 7)]


@dataclass(frozen=True)
class HubModel:
    """The recorded shape of one hub checkpoint, and what its recipe implies."""

    model: str  # the hub id the recipe names
    arch: str  # the bpo.tiny_models family with the same processor classes
    config: Callable[[], Any]  # the family's config class with the checkpoint's numbers
    hidden_size: int
    num_layers: int  # decoder layers (Llama 3.2 Vision: cross-attention layers included)
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_rows: int  # rows of the input embedding
    vision_tower: str  # module path of the vision tower
    vision_shares: frozenset[str]  # LoRA target names the vision tower has linear layers of
    image_processor: dict[str, Any]  # the hub's preprocessor values that shape images
    processor: dict[str, Any]  # the hub's processor-level values (tokens per view ...)
    image_tokens: int  # the most tokens an image adds with the recipe's processor_kwargs
    hub_image_tokens: int  # the same with the hub's settings alone
    parameters: int | None = None  # total parameters, where a source states them exactly
    listed_billions: tuple[float, int] | None = (
        None  # as a hub listing rounds them: (value, digits)
    )


# --- the checkpoints' configs -------------------------------------------------------------


def qwen2_5_vl_7b() -> Any:
    # Qwen/Qwen2.5-VL-7B-Instruct config.json. Text (3584 wide, 28 layers, 28 heads, 4 KV
    # heads, MLP 18944, vocab 152064): the official Qwen/Qwen2.5-VL-7B-Instruct-AWQ config,
    # which keeps the original's (hf.co/Qwen/Qwen2.5-VL-7B-Instruct-AWQ/blame/main/config.json).
    # Vision (depth 32, width 1280, MLP 3420, 16 heads, window 112, full attention in blocks
    # 7/15/23/31, out 3584): the original config.json as quoted by repositories that copy it
    # (a VLMEvalKit fork's README, TensorRT-LLM's Qwen2.5-VL test config); the AWQ file's
    # vision_config was cut off where search stored it.
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": [16, 24, 24],
                "rope_theta": 1e6,
            },
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
    )


def qwen3_vl_8b() -> Any:
    # Qwen/Qwen3-VL-8B-Instruct: the official config.json was not reachable through search;
    # these numbers are those of two fine-tunes that keep its config (hf.co/Steinate/Cortex
    # and hf.co/Chhagan005/CSM-DocExtract-8N config.json, text_config 4096 wide, 36 layers, 32
    # heads, 8 KV heads, head_dim 128, MLP 12288, vocab 151936) and agree with the GGUF
    # metadata of ollama's qwen3-vl:8b-instruct (vision: 27 blocks, width 1152, 16 heads,
    # 16 px patches, merge 2, DeepStack at 8/16/24).
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config={
            "vocab_size": 151936,
            "hidden_size": 4096,
            "intermediate_size": 12288,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
                "rope_theta": 5e6,
            },
        },
        vision_config={
            "depth": 27,
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_heads": 16,
            "out_hidden_size": 4096,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [8, 16, 24],
        },
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
    )


def gemma3(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int) -> Any:
    # google/gemma-3-*-it are gated; their own config.json was not readable. Both sizes share
    # the SigLIP tower (896 px, 14 px patches, 27 layers, width 1152, MLP 4304, 16 heads, no
    # head), 256 soft tokens per image, head_dim 256, a 1024-token sliding window, vocab
    # 262208 and the image ids (boi 255999, eoi 256000, image 262144): hf.co/mlx-community/
    # gemma-3-12b-pt-4bit config.json and the text configs of checkpoints made from them
    # (12B: hf.co/OpenPipe/gemma-3-12b-it-text-only, 3840 wide, 48 layers, 16 heads, 8 KV
    # heads, MLP 15360; 4B: a fine-tune, hf.co/YFolla/gemma-3-dnd, 2560 wide, 34 layers, 8
    # heads, 4 KV heads, MLP 10240).
    from transformers import Gemma3Config

    return Gemma3Config(
        text_config={
            "vocab_size": 262208,
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": 256,
            "query_pre_attn_scalar": 256,
            "sliding_window": 1024,
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": 896,
            "patch_size": 14,
            "vision_use_head": False,
        },
        mm_tokens_per_image=256,
        boi_token_index=255999,
        eoi_token_index=256000,
        image_token_index=262144,
    )


def internvl3_8b() -> Any:
    # OpenGVLab/InternVL3-8B-hf: its config.json was not reachable through search. The
    # language model is Qwen2.5-7B as in OpenGVLab/InternVL3-8B (28 layers, width 3584, MLP
    # 18944, 28 heads, 4 KV heads, vocab 151674, image context id 151667: Ascend MindSpeed-MM
    # examples/internvl3/model_8B.json); the vision tower InternViT-300M-448px (24 layers,
    # width 1024, MLP 4096, 16 heads, qkv bias, 448 px, 14 px patches: MindSpeed-MM
    # examples/qwen3vl_dev/model_internvit_qwen3.json); pixel shuffle 0.5, 256 tokens per tile
    # (hf.co/hf-internal-testing/tiny-processor-internvl, an InternVL3-1B-hf copy).
    from transformers import InternVLConfig

    return InternVLConfig(
        text_config={
            "model_type": "qwen2",
            "vocab_size": 151674,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
        },
        vision_config={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "attention_bias": True,
            "image_size": [448, 448],
            "patch_size": [14, 14],
        },
        image_token_id=151667,
        image_seq_length=256,
        downsample_ratio=0.5,
        tie_word_embeddings=False,  # Qwen2.5-7B's output layer is its own (InternVLConfig ties)
    )


def smolvlm2_2_2b() -> Any:
    # HuggingFaceTB/SmolVLM2-2.2B-Instruct: its config.json was not reachable through search.
    # The language model is SmolLM2-1.7B (hf.co/HuggingFaceTB/SmolLM2-1.7B-Instruct
    # config.json: 24 layers, width 2048, MLP 8192, 32 heads, 32 KV heads, head_dim 64); the
    # vocabulary 49280 follows from its generation_config.json (eos 49279, hf.co/HuggingFaceTB/
    # SmolVLM2-2.2B-Instruct/blob/refs%2Fpr%2F1/generation_config.json); scale factor 3 and 81
    # tokens per 384 px tile as SmolVLM-2B (hf.co/frontrx/ECGv3, a SmolVLM-Base copy). The
    # tower is SigLIP-so400m at 384 px. image_token_id 49190 is SmolVLM2-256M's: not read
    # from the 2.2B config.
    from transformers import SmolVLMConfig

    return SmolVLMConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": 49280,
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 24,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "head_dim": 64,
        },
        vision_config={
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": 384,
            "patch_size": 14,
        },
        scale_factor=3,
        image_token_id=49190,
    )


def llava_onevision_7b() -> Any:
    # llava-hf/llava-onevision-qwen2-7b-ov-hf config.json (its hub commit bd59bb6, "Upload
    # LlavaOnevisionForConditionalGeneration"): Qwen2-7B text 3584 wide, 28 layers, 28 heads, 4
    # KV heads, MLP 18944, vocab 152128; SigLIP 384 px, width 1152, MLP 4304;
    # vision_aspect_ratio anyres_max_9; image token 151646; pinpoints every grid of 384 px
    # tiles up to 6 x 6 (hf.co/mgoin/llava-onevision-qwen2-7b-ov-hf-bnb-full-4bit, a copy).
    # 26 SigLIP layers and 16 heads: transformers' LlavaOnevisionConfig defaults, which it
    # documents as this checkpoint's (the commit excerpt stops before them).
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        text_config={
            "model_type": "qwen2",
            "vocab_size": 152128,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 26,
            "num_attention_heads": 16,
            "image_size": 384,
            "patch_size": 14,
            "vision_use_head": False,
        },
        image_grid_pinpoints=ONEVISION_PINPOINTS,
        vision_aspect_ratio="anyres_max_9",
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_token_index=151646,
        video_token_index=151647,
    )


def paligemma2_3b_448() -> Any:
    # google/paligemma2-3b-mix-448 (gated) config.json, as kept by a fine-tune that names it
    # (hf.co/Mostafa3zazi/exp3_code_only config.json, _name_or_path google/paligemma2-3b-mix-448):
    # Gemma 2 2B text 2304 wide, 26 layers, 4 KV heads, MLP 9216, vocab 257216, attention
    # soft-capping 50, final 30, sliding window 4096; SigLIP 448 px, 27 layers, width 1152,
    # MLP 4304, 16 heads, 14 px patches, 1024 image tokens, projection 2304. 8 heads of 256:
    # Gemma2Config's defaults (Gemma 2 2B), which that config leaves implicit.
    from transformers import PaliGemmaConfig

    return PaliGemmaConfig(
        text_config={
            "model_type": "gemma2",
            "vocab_size": 257216,
            "hidden_size": 2304,
            "intermediate_size": 9216,
            "num_hidden_layers": 26,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "query_pre_attn_scalar": 256,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "sliding_window": 4096,
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": 448,
            "patch_size": 14,
            "projection_dim": 2304,
            "vision_use_head": False,
        },
        projection_dim=2304,
        image_token_index=257152,
    )


def llama_3_2_11b_vision() -> Any:
    # meta-llama/Llama-3.2-11B-Vision-Instruct (gated) config.json, as kept by fine-tunes that
    # name it (hf.co/bababababooey/llama-3.2-11b-vision-instruct-stheno-abliterated and
    # hf.co/Aekanun/thai-handwriting-llm config.json): text 4096 wide, 40 layers (cross-
    # attention at 3, 8, ..., 38), 32 heads, 8 KV heads, MLP 14336, vocab 128256 (+8 rows of
    # embedding for the image tokens, as MllamaTextModel builds it); vision 1280 wide, MLP 5120,
    # 32 local + 8 global layers, 16 heads, 560 px tiles of 14 px patches, output 7680. The
    # intermediate layers 3/7/15/23/30 are MllamaVisionConfig's defaults.
    from transformers import MllamaConfig

    return MllamaConfig(
        text_config={
            "vocab_size": 128256,
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 40,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
        },
        vision_config={
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_hidden_layers": 32,
            "num_global_layers": 8,
            "attention_heads": 16,
            "image_size": 560,
            "patch_size": 14,
            "max_num_tiles": 4,
            "vision_output_dim": 7680,
            "intermediate_layers_indices": [3, 7, 15, 23, 30],
        },
        image_token_index=128256,
    )


def llava_1_5(hidden: int, intermediate: int, layers: int, heads: int) -> Any:
    # llava-hf/llava-1.5-*-hf config.json (hf.co/llava-hf/llava-1.5-13b-hf/blob/refs%2Fpr%2F5/
    # config.json; the 7B one is kept by hf.co/TIGER-Lab/Mantis-llava-7b): Vicuna text with
    # vocab 32064; CLIP ViT-L/14 at 336 px (24 layers, width 1024, MLP 4096, 16 heads), the
    # second-to-last layer's 576 patch features. Vicuna-7B / -13B widths: Llama 2's.
    from transformers import LlavaConfig

    return LlavaConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": 32064,
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": heads,
        },
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 336,
            "patch_size": 14,
            "projection_dim": 768,
        },
        image_token_index=32000,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )


def qwen2_vl(hidden: int, intermediate: int, heads: int, kv_heads: int, vocab: int) -> Any:
    # Qwen/Qwen2-VL-*-Instruct config.json (the 7B's as copied by hf.co/OS-Copilot/
    # OS-Genesis-7B-AW and hf.co/apjanco/es_qwen2_vl_pangea; the 2B's by hf.co/erax-ai/
    # EraX-VL-2B-V1.5): 28 layers; the 2B ties its embeddings. Vision: depth 32, width 1280,
    # 16 heads, MLP ratio 4, 14 px patches merged 2 x 2 (Qwen2VLVisionConfig's defaults, which
    # these configs leave implicit).
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": 28,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "tie_word_embeddings": vocab == 151936,
            "rope_parameters": {
                "rope_type": "default",
                "mrope_section": [16, 24, 24],
                "rope_theta": 1e6,
            },
        },
        vision_config={"depth": 32, "embed_dim": 1280, "num_heads": 16, "hidden_size": hidden},
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
    )


# --- what each recipe holds -------------------------------------------------------------------

QWEN2_VL_PROCESSOR = {
    # Qwen/Qwen2-VL-* and Qwen2.5-VL-* preprocessor_config.json: min_pixels 3136, max_pixels
    # 12845056 (= 16384 tokens of 28 px), 14 px patches merged 2 x 2, 2 frames per patch.
    "size": {"shortest_edge": 3136, "longest_edge": 12845056},
    "patch_size": 14,
    "merge_size": 2,
    "temporal_patch_size": 2,
}
GEMMA3_PROCESSOR = {
    # google/gemma-3-4b-it preprocessor_config.json (its verbatim copy hf.co/Synthetica-AI/
    # gemma-3-4b-it; the 12B's is the same, hf.co/RedHatAI/gemma-3-12b-it-quantized.w4a16):
    # 896 x 896, pan-and-scan left unset, 256 tokens per image.
    "size": {"height": 896, "width": 896},
    "do_pan_and_scan": None,
    "image_seq_length": 256,
}

HUB_MODELS: dict[str, HubModel] = {
    "qwen2.5-vl-7b": HubModel(
        model="Qwen/Qwen2.5-VL-7B-Instruct",
        arch="qwen2.5-vl",
        config=qwen2_5_vl_7b,
        hidden_size=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        head_dim=128,
        vocab_rows=152064,
        vision_tower="model.visual",
        vision_shares=frozenset({"gate_proj", "up_proj", "down_proj"}),  # its SwiGLU MLP
        image_processor=QWEN2_VL_PROCESSOR,
        processor={},
        image_tokens=1280,
        hub_image_tokens=1849,  # 1200 x 1200 px at 1204 x 1204: 43 x 43 (its cap: 16384)
    ),
    "qwen3-vl-8b": HubModel(
        model="Qwen/Qwen3-VL-8B-Instruct",
        arch="qwen3-vl",
        config=qwen3_vl_8b,
        hidden_size=4096,
        num_layers=36,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        vocab_rows=151936,
        vision_tower="model.visual",
        vision_shares=frozenset(),  # its blocks name their layers qkv, proj, linear_fc1/2
        # preprocessor_config.json: 16 px patches merged 2 x 2, 65536 to 16777216 px (the
        # GGUF metadata of ollama's qwen3-vl:8b-instruct carries the same numbers).
        image_processor={
            "size": {"shortest_edge": 65536, "longest_edge": 16777216},
            "patch_size": 16,
            "merge_size": 2,
            "temporal_patch_size": 2,
        },
        processor={},
        image_tokens=1280,
        hub_image_tokens=1444,  # 1200 x 1200 px at 1216 x 1216: 38 x 38 (its cap: 16384)
        listed_billions=(9, 0),  # the hub's model listings: "Qwen/Qwen3-VL-8B-Instruct ... 9B"
    ),
    "gemma-3-4b": HubModel(
        model="google/gemma-3-4b-it",
        arch="gemma3",
        config=lambda: gemma3(2560, 10240, 34, 8, 4),
        hidden_size=2560,
        num_layers=34,
        num_heads=8,
        num_kv_heads=4,
        head_dim=256,
        vocab_rows=262208,
        vision_tower="model.vision_tower",
        vision_shares=VIT_QKV,
        image_processor=GEMMA3_PROCESSOR,
        processor={"image_seq_length": 256},
        image_tokens=262,  # 256 soft tokens + "\n\n<start_of_image>" ... "<end_of_image>\n\n"
        hub_image_tokens=262,
    ),
    "gemma-3-12b": HubModel(
        model="google/gemma-3-12b-it",
        arch="gemma3",
        config=lambda: gemma3(3840, 15360, 48, 16, 8),
        hidden_size=3840,
        num_layers=48,
        num_heads=16,
        num_kv_heads=8,
        head_dim=256,
        vocab_rows=262208,
        vision_tower="model.vision_tower",
        vision_shares=VIT_QKV,
        image_processor=GEMMA3_PROCESSOR,
        processor={"image_seq_length": 256},
        image_tokens=262,
        hub_image_tokens=262,
    ),
    "internvl3-8b": HubModel(
        model="OpenGVLab/InternVL3-8B-hf",
        arch="internvl",
        config=internvl3_8b,
        hidden_size=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        head_dim=128,
        vocab_rows=151674,
        vision_tower="model.vision_tower",
        vision_shares=VIT_QKV,
        # The -hf conversions' preprocessor (transformers' convert_internvl_weights_to_hf.py;
        # as InternVL3-1B-hf, see bpo.tiny_models.internvl): 448 px tiles, 1 to 12 of them;
        # crop_to_patches stays off here but InternVLProcessor turns it on by default.
        image_processor={
            "size": {"height": 448, "width": 448},
            "crop_to_patches": False,
            "min_patches": 1,
            "max_patches": 12,
        },
        processor={"image_seq_length": 256},
        image_tokens=1282,  # (4 tiles + thumbnail) x 256 + <img></img>
        hub_image_tokens=3330,  # (12 + 1) x 256 + 2
        # The hub lists OpenGVLab/InternVL3-8B (the same weights) as "8B" (7.94B untied; a tied
        # output layer would make it 7.40B).
        listed_billions=(8, 0),
    ),
    "smolvlm2-2.2b": HubModel(
        model="HuggingFaceTB/SmolVLM2-2.2B-Instruct",
        arch="smolvlm",
        config=smolvlm2_2_2b,
        hidden_size=2048,
        num_layers=24,
        num_heads=32,
        num_kv_heads=32,
        head_dim=64,
        vocab_rows=49280,
        vision_tower="model.vision_model",
        vision_shares=VIT_QKV,
        # SmolVLM2-2.2B's processor_config.json as kept by a fine-tune of it (hf.co/
        # NLP-Orange-Problem/AttentionSeekers): longest edge 1536, 384 px tiles, 81 tokens each.
        image_processor={"size": {"longest_edge": 1536}, "max_image_size": {"longest_edge": 384}},
        processor={"image_seq_len": 81},
        image_tokens=835,  # (3 x 3 tiles + global view) x 81 + the tile markers
        hub_image_tokens=1417,  # (4 x 4 + 1) x 81 + the tile markers
    ),
    "llava-onevision-7b": HubModel(
        model="llava-hf/llava-onevision-qwen2-7b-ov-hf",
        arch="llava-onevision",
        config=llava_onevision_7b,
        hidden_size=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        head_dim=128,
        vocab_rows=152128,
        vision_tower="model.vision_tower",
        vision_shares=VIT_QKV,
        image_processor={
            "size": {"height": 384, "width": 384},
            "image_grid_pinpoints": ONEVISION_PINPOINTS,
        },
        # processor_config.json: 729 tokens per 384 px view (27 x 27), anyres_max_9.
        processor={"num_image_tokens": 729, "vision_aspect_ratio": "anyres_max_9"},
        image_tokens=7371,  # base view + 81 x 81 pooled tile features + 81 row ends
        hub_image_tokens=7371,
    ),
    "paligemma2-3b": HubModel(
        model="google/paligemma2-3b-mix-448",
        arch="paligemma",
        config=paligemma2_3b_448,
        hidden_size=2304,
        num_layers=26,
        num_heads=8,
        num_kv_heads=4,
        head_dim=256,
        vocab_rows=257216,
        vision_tower="model.vision_tower",
        vision_shares=VIT_QKV,
        image_processor={"size": {"height": 448, "width": 448}, "image_seq_length": 1024},
        processor={},
        image_tokens=1026,  # 1024 image tokens + the BOS and newline the processor places
        hub_image_tokens=1026,
        # keras-hub's PaliGemma 2 presets (keras_hub/src/models/pali_gemma/
        # pali_gemma_presets.py, pali_gemma2_mix_3b_448): 3,032,979,696 parameters, with the
        # vocabulary of 257152; transformers' checkpoint pads the embedding to 257216 rows.
        parameters=3_032_979_696 + (257216 - 257152) * 2304,
    ),
    "llama-3.2-11b-vision": HubModel(
        model="meta-llama/Llama-3.2-11B-Vision-Instruct",
        arch="mllama",
        config=llama_3_2_11b_vision,
        hidden_size=4096,
        num_layers=40,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        vocab_rows=128264,
        vision_tower="model.vision_model",
        vision_shares=frozenset({"q_proj", "k_proj", "v_proj", "o_proj"}),
        # preprocessor_config.json: 560 px tiles, up to 4 (as the config's max_num_tiles).
        image_processor={"size": {"height": 560, "width": 560}, "max_image_tiles": 4},
        processor={},
        image_tokens=2,  # one <|image|> (+ the BOS the processor adds): the image enters
        hub_image_tokens=2,  # through cross-attention, not the sequence
    ),
    "llava-1.5-7b": HubModel(
        model="llava-hf/llava-1.5-7b-hf",
        arch="llava",
        config=lambda: llava_1_5(4096, 11008, 32, 32),
        hidden_size=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
        head_dim=128,
        vocab_rows=32064,
        vision_tower="model.vision_tower",
        vision_shares=VIT_QKV,
        # preprocessor_config.json: CLIP at 336 px (resize the short edge, centre crop).
        image_processor={
            "size": {"shortest_edge": 336},
            "crop_size": {"height": 336, "width": 336},
        },
        processor={"patch_size": 14, "vision_feature_select_strategy": "default"},
        image_tokens=576,  # 24 x 24 patches
        hub_image_tokens=576,
    ),
    "llava-1.5-13b": HubModel(
        model="llava-hf/llava-1.5-13b-hf",
        arch="llava",
        config=lambda: llava_1_5(5120, 13824, 40, 40),
        hidden_size=5120,
        num_layers=40,
        num_heads=40,
        num_kv_heads=40,
        head_dim=128,
        vocab_rows=32064,
        vision_tower="model.vision_tower",
        vision_shares=VIT_QKV,
        image_processor={
            "size": {"shortest_edge": 336},
            "crop_size": {"height": 336, "width": 336},
        },
        processor={"patch_size": 14, "vision_feature_select_strategy": "default"},
        image_tokens=576,
        hub_image_tokens=576,
    ),
    "qwen2-vl-2b": HubModel(
        model="Qwen/Qwen2-VL-2B-Instruct",
        arch="qwen2-vl",
        config=lambda: qwen2_vl(1536, 8960, 12, 2, 151936),
        hidden_size=1536,
        num_layers=28,
        num_heads=12,
        num_kv_heads=2,
        head_dim=128,
        vocab_rows=151936,
        vision_tower="model.visual",
        vision_shares=frozenset(),  # qkv, proj, fc1, fc2
        image_processor=QWEN2_VL_PROCESSOR,
        processor={},
        image_tokens=1280,
        hub_image_tokens=1849,
        listed_billions=(2.21, 2),  # "Model size 2.21B params" of its fine-tunes on the hub
    ),
    "qwen2-vl-7b": HubModel(
        model="Qwen/Qwen2-VL-7B-Instruct",
        arch="qwen2-vl",
        config=lambda: qwen2_vl(3584, 18944, 28, 4, 152064),
        hidden_size=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        head_dim=128,
        vocab_rows=152064,
        vision_tower="model.visual",
        vision_shares=frozenset(),
        image_processor=QWEN2_VL_PROCESSOR,
        processor={},
        image_tokens=1280,
        hub_image_tokens=1849,
        listed_billions=(8.29, 2),  # "Model size 8.29B params" of its fine-tunes on the hub
    ),
}
NAMES = sorted(HUB_MODELS)


def recipe_of(name: str) -> Recipe:
    return load_recipe(RECIPES / f"{name}.yaml")


@cache
def meta_model(name: str) -> Any:
    """The recipe's model with the checkpoint's shape, on the meta device (no weights)."""
    import torch
    from transformers import AutoModelForImageTextToText

    recipe = recipe_of(name)
    kwargs = {}
    if recipe.model.attn_implementation is not None:
        kwargs["attn_implementation"] = recipe.model.attn_implementation
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(HUB_MODELS[name].config(), **kwargs)


# --- the tests --------------------------------------------------------------------------------


def test_every_model_recipe_is_checked_here():
    shipped = {path.stem for path in RECIPES.glob("*.yaml")} - {"tiny"}
    assert shipped == set(HUB_MODELS)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_names_the_checkpoint_recorded_here(name):
    assert recipe_of(name).model.name == HUB_MODELS[name].model


@pytest.mark.parametrize("name", NAMES)
def test_model_has_the_checkpoints_dimensions(name):
    spec, model = HUB_MODELS[name], meta_model(name)
    decoder = model.get_decoder()
    embedding = decoder.get_input_embeddings()
    assert (embedding.num_embeddings, embedding.embedding_dim) == (
        spec.vocab_rows,
        spec.hidden_size,
    )
    assert len(decoder.layers) == spec.num_layers
    attention = decoder.layers[0].self_attn
    assert attention.q_proj.out_features == spec.num_heads * spec.head_dim
    assert attention.k_proj.out_features == spec.num_kv_heads * spec.head_dim
    assert next(model.parameters()).device.type == "meta"  # nothing was allocated
    count = sum(p.numel() for p in model.parameters())
    if spec.parameters is not None:
        assert count == spec.parameters
    if spec.listed_billions is not None:
        value, digits = spec.listed_billions
        assert round(count / 1e9, digits) == value


@pytest.mark.parametrize("name", NAMES)
def test_attention_implementation_is_the_recipes(name):
    # from_config raises for a kernel the architecture does not support (PaliGemma 2's
    # Gemma 2 refuses sdpa: it soft-caps attention logits); the text model must run it too.
    recipe, model = recipe_of(name), meta_model(name)
    wanted = recipe.model.attn_implementation
    assert model.config._attn_implementation == wanted
    assert model.get_decoder().config._attn_implementation == wanted


def test_paligemma2_refuses_sdpa():
    # Why recipes/paligemma2-3b.yaml asks for eager attention.
    import torch
    from transformers import AutoModelForImageTextToText

    with pytest.raises(ValueError, match="scaled_dot_product_attention"), torch.device("meta"):
        AutoModelForImageTextToText.from_config(paligemma2_3b_448(), attn_implementation="sdpa")


@pytest.mark.parametrize("name", NAMES)
def test_lora_adapts_every_decoder_layer_and_no_vision_layer(name):
    import torch
    from peft.tuners.tuners_utils import check_target_module_exists

    from bpo.train.model import language_model_prefix, peft_config

    spec, recipe, model = HUB_MODELS[name], recipe_of(name), meta_model(name)
    config = peft_config(recipe, model)  # refuses names that are not the LM's linear layers
    linear = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    adapted = sorted(n for n in linear if check_target_module_exists(config, n))
    targets = set(recipe.lora.target_modules or PROJECTIONS)
    language = language_model_prefix(model) + "."

    assert len(adapted) == spec.num_layers * len(targets)
    assert {n.rsplit(".", 1)[-1] for n in adapted} == targets
    assert all(n.startswith(language) for n in adapted)
    # Every decoder layer, the cross-attention ones of Llama 3.2 Vision too.
    layers = {re.search(r"\.layers\.(\d+)\.", n).group(1) for n in adapted}
    assert layers == {str(i) for i in range(spec.num_layers)}
    # The vision tower has linear layers of some of the same names; none is adapted.
    tower = [n for n in linear if n.startswith(spec.vision_tower + ".")]
    assert tower, f"no vision tower at {spec.vision_tower}"
    assert {n.rsplit(".", 1)[-1] for n in tower} & targets == spec.vision_shares
    assert not any(n.startswith(spec.vision_tower + ".") for n in adapted)


@pytest.mark.parametrize("name", NAMES)
def test_explicit_targets_are_the_language_models_linear_layers(name):
    # The recipes that name their targets name all of the LM's projections (ms-swift's
    # all-linear with freeze_vit), so they and the default (None) adapt the same layers.
    import torch

    from bpo.train.model import language_model_prefix

    recipe, model = recipe_of(name), meta_model(name)
    prefix = language_model_prefix(model) + "."
    leaves = {
        n.rsplit(".", 1)[-1]
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.startswith(prefix)
    }
    assert leaves == PROJECTIONS
    assert set(recipe.lora.target_modules or leaves) == leaves


# --- processors and image tokens ----------------------------------------------------------------


def settings_key(spec: HubModel) -> str:
    """Recipes whose checkpoints share processor settings (Gemma 3 4B and 12B ...) share one."""
    return json.dumps([spec.arch, spec.image_processor, spec.processor], sort_keys=True)


@pytest.fixture(scope="module")
def hub_processor(tiny_checkpoint, tmp_path_factory) -> Callable[[str, dict[str, Any]], Any]:
    """Returns the recipe's processor: the family's processor classes set up with the hub's
    preprocessor values, loaded through bpo's `load_processor` with the given
    ``processor_kwargs`` (the recipe's, or ``{}`` for the hub's settings alone)."""
    from bpo.config import ModelConfig
    from bpo.train.model import load_processor

    folders: dict[str, Path] = {}

    def processor(name: str, kwargs: dict[str, Any]) -> Any:
        spec = HUB_MODELS[name]
        key = settings_key(spec)
        if key not in folders:
            folder = tmp_path_factory.mktemp(f"processor-{spec.arch}")
            for file in tiny_checkpoint(spec.arch).iterdir():
                if not file.name.endswith(".safetensors"):
                    shutil.copy(file, folder / file.name)
            saved = json.loads((folder / "processor_config.json").read_text())
            saved["image_processor"].update(spec.image_processor)
            saved.update(spec.processor)
            (folder / "processor_config.json").write_text(json.dumps(saved))
            folders[key] = folder
        return load_processor(ModelConfig(name=str(folders[key]), processor_kwargs=kwargs))

    return processor


@pytest.fixture(scope="module")
def image_tokens(hub_processor) -> Callable[..., int]:
    """Returns `most_image_tokens` of a recipe's processor with given kwargs, counted once."""
    from bpo.tiny_models import family

    counted: dict[str, int] = {}

    def count(
        name: str, kwargs: dict[str, Any], sizes: tuple[tuple[int, int], ...] = IMAGE_SIZES
    ) -> int:
        spec = HUB_MODELS[name]
        key = json.dumps([settings_key(spec), kwargs, sizes], sort_keys=True)
        if key not in counted:
            processor = hub_processor(name, kwargs)
            counted[key] = most_image_tokens(processor, family(spec.arch).image_marker, sizes)
        return counted[key]

    return count


def most_image_tokens(
    processor: Any, marker: str, sizes: tuple[tuple[int, int], ...] = IMAGE_SIZES
) -> int:
    """The most tokens one image takes in a prompt, over images of `sizes`.

    What the processor expands the chat template's image marker (one token) into: the image
    tokens with their markers, and what the processor itself adds around them (PaliGemma's
    BOS and newline, Llama 3.2's BOS). A FutureWarning (a deprecated path, such as Qwen's
    call-time max_pixels) fails the count.
    """
    import warnings

    from PIL import Image

    prompt = marker + "Describe the image in detail."
    text_only = len(processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    counts = []
    for size in sizes:
        image = Image.new("RGB", size, (200, 120, 40))
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            ids = processor(images=[image], text=[prompt], return_tensors="pt")["input_ids"]
        counts.append(ids.shape[-1] - text_only + 1)
    return max(counts)


@pytest.mark.parametrize("name", NAMES)
def test_processor_kwargs_are_accepted_by_the_image_processor(name, hub_processor):
    import inspect

    kwargs = recipe_of(name).model.processor_kwargs
    processor = hub_processor(name, kwargs)
    image_processor = processor.image_processor
    accepted = set(getattr(image_processor.valid_kwargs, "__annotations__", {}))
    for key, value in kwargs.items():
        assert key in accepted, f"{type(image_processor).__name__} takes no {key}"
        stored = getattr(image_processor, key, None)
        assert stored is not None, f"{type(image_processor).__name__} did not keep {key}"
        if isinstance(value, dict):
            assert {k: stored[k] for k in value} == value
        else:
            assert stored == value
    # They go to the image processor, not to the processor's own arguments.
    assert not set(kwargs) & set(inspect.signature(type(processor).__init__).parameters)


@pytest.mark.parametrize("name", NAMES)
def test_image_tokens_leave_room_in_max_length(name, image_tokens):
    spec, recipe = HUB_MODELS[name], recipe_of(name)
    tokens = image_tokens(name, recipe.model.processor_kwargs)
    assert tokens == spec.image_tokens
    assert recipe.data.max_length is not None
    assert tokens + TEXT_ROOM <= recipe.data.max_length
    # With the hub's settings alone: what the recipe's processor_kwargs change, if anything.
    hub_tokens = image_tokens(name, {})
    assert hub_tokens == spec.hub_image_tokens
    if hub_tokens != tokens:
        assert recipe.model.processor_kwargs and tokens < hub_tokens


def test_gemma3_pan_and_scan_is_a_live_switch(image_tokens):
    # The Gemma 3 recipes set do_pan_and_scan false, as the hub leaves it; on, a wide image
    # would gain crops of 256 tokens each, so the key pins a real choice.
    for name in ("gemma-3-4b", "gemma-3-12b"):
        assert recipe_of(name).model.processor_kwargs == {"do_pan_and_scan": False}
    wide = ((1536, 384),)
    assert (
        image_tokens("gemma-3-4b", {"do_pan_and_scan": True}, wide)
        > HUB_MODELS["gemma-3-4b"].image_tokens
    )
