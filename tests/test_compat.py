"""The torchvision stand-ins: video processors for images only, and Pixtral's processor."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from transformers import AutoProcessor
from transformers.utils import is_torchvision_available

from bpo import compat

pytestmark = pytest.mark.skipif(
    is_torchvision_available(), reason="the stand-ins are used without torchvision only"
)


def test_checkpoints_name_the_standard_video_processor(tiny_checkpoint):
    for arch, expected in [
        ("qwen2-vl", "Qwen2VLVideoProcessor"),
        ("smolvlm", "SmolVLMVideoProcessor"),
        ("internvl", "InternVLVideoProcessor"),
    ]:
        config = json.loads((tiny_checkpoint(arch) / "processor_config.json").read_text())
        assert config["video_processor"]["video_processor_type"] == expected


def test_the_stand_in_has_the_video_settings_processors_read(tiny_checkpoint):
    # SmolVLM's apply_chat_template reads video_processor.num_frames and .fps.
    processor = AutoProcessor.from_pretrained(tiny_checkpoint("smolvlm"))
    video = processor.video_processor
    assert isinstance(video, compat.image_only_video_processor_class())
    assert video.num_frames is None and video.fps is None
    assert video.video_sampling["max_frames"] == 64  # what the saved config held is kept
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    assert "<image>" in processor.apply_chat_template(prompt, add_generation_prompt=True)
    # Saved back, it writes only the saved settings, not the defaults it stands in with.
    saved = video.to_dict()
    assert "num_frames" not in saved and "fps" not in saved


def test_video_stand_in_pickles_and_refuses_videos(tiny_qwen2vl_path):
    processor = pickle.loads(pickle.dumps(AutoProcessor.from_pretrained(tiny_qwen2vl_path)))
    video = np.zeros((2, 56, 56, 3), dtype=np.uint8)
    with pytest.raises(ImportError, match="torchvision"):
        processor(text=["<|vision_start|><|video_pad|><|vision_end|>Hi"], videos=[video])


def test_pixtral_processor_loads_without_torchvision(tiny_checkpoint, photo):
    import transformers

    compat.allow_processors_without_torchvision()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint("mistral3"))
    assert type(processor) is transformers.PixtralProcessor
    inputs = processor(images=[photo], text=["[INST][IMG]Hi[/INST]"], return_tensors="pt")
    # A 64 px view in 16 px merged patches: 4 rows of 4 [IMG], each closed by a break/end.
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 16
    assert int((inputs["input_ids"] == processor.image_break_token_id).sum()) == 3
