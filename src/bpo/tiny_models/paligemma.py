"""PaliGemma (google/paligemma-3b-pt-224): SigLIP, a linear projection, Gemma as a prefix LM
(image and prompt attend to each other both ways; the answer causally).

PaliGemma's processor lays out "<image>...<bos>prompt\\n" itself: it puts BOS after the
last image token and appends the newline that separates prompt from answer. It also adds
PaliGemma's 1024 <locNNNN> and 128 <segNNN> tokens to the tokenizer, so the vocabulary is
about 2000 here.
"""

from __future__ import annotations

from bpo.errors import ConfigError
from bpo.processing import PALIGEMMA_PROMPT_FORMAT
from bpo.tiny_models.common import Built, Family, TinySize, special_ids
from bpo.tiny_models.gemma3 import gemma_tokenizer

# The PaliGemma checkpoints ship no chat template; bpo prompts them in their documented
# format (`bpo.processing.PALIGEMMA_PROMPT_FORMAT`). The tiny one ships that format as its
# chat template, so the tests that read every family's template read this one too.
CHAT_TEMPLATE = PALIGEMMA_PROMPT_FORMAT


def build(size: TinySize) -> Built:
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipVisionConfig,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    if size.image_size % size.patch_size:
        raise ConfigError(f"paligemma: image_size must be a multiple of {size.patch_size}")
    tokens_per_image = (size.image_size // size.patch_size) ** 2  # paligemma-224: 256
    tokenizer = gemma_tokenizer(size, ["<image>"], extra_special_tokens={"image_token": "<image>"})
    image_processor = SiglipImageProcessorPil(
        size={"height": size.image_size, "width": size.image_size},
        image_seq_length=tokens_per_image,
    )
    # Built before the model: it adds the <loc>/<seg> tokens the vocabulary must cover.
    processor = PaliGemmaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    ids = special_ids(tokenizer, ["<image>", "<eos>", "<bos>", "<pad>"])
    text = GemmaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        head_dim=size.hidden_size // size.num_attention_heads,
        max_position_embeddings=2048,
        bos_token_id=ids["<bos>"],
        eos_token_id=ids["<eos>"],
        pad_token_id=ids["<pad>"],
    )
    config = PaliGemmaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=size.vision_hidden_size,
            intermediate_size=4 * size.vision_hidden_size,
            num_hidden_layers=size.vision_num_hidden_layers,
            num_attention_heads=size.vision_num_attention_heads,
            image_size=size.image_size,
            patch_size=size.patch_size,
            vision_use_head=False,
        ),
        text_config=text,
        image_token_index=ids["<image>"],
        projection_dim=size.hidden_size,
        hidden_size=size.hidden_size,
        vocab_size=len(tokenizer),
    )
    model = PaliGemmaForConditionalGeneration(config)
    return model, processor


# 32 px in 8 px patches: 16 image tokens.
FAMILY = Family(
    name="paligemma",
    reference="google/paligemma-3b-pt-224",
    model_class="PaliGemmaForConditionalGeneration",
    image_marker="<image>",
    build=build,
    default_size=TinySize(image_size=32),
)
