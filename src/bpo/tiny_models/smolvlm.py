"""SmolVLM (HuggingFaceTB/SmolVLM2-256M-Video-Instruct): Idefics3's design, small: a SigLIP
encoder over tiles and a global view, pixel shuffle into SmolLM2 (a Llama), GPT-2's
byte-level tokenizer, and a video processor (so its processor needs `num2words`)."""

from __future__ import annotations

from bpo.tiny_models.common import (
    Built,
    Family,
    TinySize,
    language_model_fields,
    special_ids,
    train_tokenizer,
    video_processor,
)
from bpo.tiny_models.idefics3 import (
    IMAGE_TOKENS,
    SCALE_FACTOR,
    chat_template,
    image_geometry,
    image_seq_len,
    vision_config,
)

CONTROLS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>", "<video>"]


def build(size: TinySize) -> Built:
    from transformers import (
        GPT2Tokenizer,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMProcessor,
    )
    from transformers.models.smolvlm.image_processing_pil_smolvlm import (
        SmolVLMImageProcessorPil,
    )

    # SmolLM2's tokenizer (GPT-2's class); SmolVLM2 ends turns with <end_of_utterance>,
    # which is EOS here, and pads with <|im_end|>.
    tokenizer = train_tokenizer(
        GPT2Tokenizer(
            bos_token="<|im_start|>",
            eos_token="<end_of_utterance>",
            pad_token="<|im_end|>",
            unk_token="<|endoftext|>",
            padding_side="left",
        ),
        size,
        [*CONTROLS, *IMAGE_TOKENS],
    )
    ids = special_ids(tokenizer, [*CONTROLS, "<image>"])
    config = SmolVLMConfig(
        vision_config=vision_config(size),
        text_config={"model_type": "llama", **language_model_fields(size, tokenizer)},
        scale_factor=SCALE_FACTOR,  # SmolVLM2-256M uses 4 on 16x16 patches of 512 px tiles
        image_token_id=ids["<image>"],
    )
    model = SmolVLMForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<end_of_utterance>"], ids["<|endoftext|>"]]
    geometry = image_geometry(size)
    # SmolVLM2's video processor samples frames by `video_sampling` (1 fps, up to 64 frames).
    sampling = {"fps": 1, "max_frames": 64, "video_size": geometry["size"]}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessorPil(**geometry),
        video_processor=video_processor(
            "SmolVLMVideoProcessor", **geometry, video_sampling=sampling
        ),
        tokenizer=tokenizer,
        image_seq_len=image_seq_len(size),
        chat_template=chat_template("<|im_start|>"),
    )
    return model, processor


# As Idefics3: 32 px tiles in 8 px patches, 4 tokens per tile, up to 2x2 tiles + global.
FAMILY = Family(
    name="smolvlm",
    reference="HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
    model_class="SmolVLMForConditionalGeneration",
    image_marker="<image>",
    build=build,
    default_size=TinySize(image_size=32),
)
