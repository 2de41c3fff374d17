import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import is_torchvision_available

from bpo.cli import main
from bpo.errors import ConfigError
from bpo.tiny_model import ARCHES, build_tiny_model, tiny_size

PATH_FIXTURES = {"llava": "tiny_llava_path", "qwen2-vl": "tiny_qwen2vl_path"}


@pytest.fixture(params=ARCHES)
def tiny(request):
    """(arch, model, processor) loaded the standard way from the session's checkpoint."""
    path = request.getfixturevalue(PATH_FIXTURES[request.param])
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    return request.param, model, processor


def user_turn(question, *, image=True):
    content = [{"type": "image"}] if image else []
    return {"role": "user", "content": [*content, {"type": "text", "text": question}]}


def prepare(processor, images, questions):
    prompts = [
        processor.apply_chat_template([user_turn(q)], add_generation_prompt=True) for q in questions
    ]
    # Special tokens come from the template, as in TRL.
    return processor(
        images=images, text=prompts, padding=True, add_special_tokens=False, return_tensors="pt"
    )


def image_token_id(model):
    return getattr(model.config, "image_token_id", None) or model.config.image_token_index


def expected_image_tokens(arch, model, inputs):
    vision = model.config.vision_config
    if arch == "llava":  # one token per patch; the CLS position is dropped ("default" strategy)
        return (vision.image_size // vision.patch_size) ** 2 * len(inputs["input_ids"])
    return int(inputs["image_grid_thw"].prod(dim=-1).sum()) // vision.spatial_merge_size**2


def test_unknown_arch_names_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="llava, qwen2-vl"):
        build_tiny_model("llama-vision", tmp_path)


def test_unknown_or_bad_size_is_refused():
    with pytest.raises(ConfigError, match="hidden_size"):
        tiny_size("llava", hidden_sise=8)
    with pytest.raises(ConfigError, match="positive"):
        tiny_size("llava", hidden_size=0)


def test_reloads_as_a_standard_checkpoint(tiny):
    arch, model, processor = tiny
    expected = {
        "llava": "LlavaForConditionalGeneration",
        "qwen2-vl": "Qwen2VLForConditionalGeneration",
    }
    assert type(model).__name__ == expected[arch]
    assert processor.tokenizer.padding_side == "left"
    assert processor.tokenizer.pad_token_id is not None
    assert len(processor.tokenizer) <= 2048
    assert model.config.get_text_config().vocab_size == len(processor.tokenizer)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_image_tokens_match_the_model(tiny, photo, photo_by_name):
    arch, model, processor = tiny
    inputs = prepare(
        processor, [photo, photo_by_name("chelsea")], ["What is this?", "Describe it."]
    )
    count = int((inputs["input_ids"] == image_token_id(model)).sum())
    assert count == expected_image_tokens(arch, model, inputs) > 0
    with torch.no_grad():
        model(**inputs)  # raises "Image features and image tokens do not match" otherwise


def test_batched_generation_with_left_padding(tiny, photo, photo_by_name):
    _, model, processor = tiny
    images = [photo, photo_by_name("coffee")]
    questions = ["How many cups are in the image? Answer with a number.", "Is there a dog?"]
    batch = prepare(processor, images, questions)
    assert batch["attention_mask"][1, 0] == 0  # the shorter prompt is padded on the left
    settings = dict(
        max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    with torch.no_grad():
        batched = model.generate(**batch, **settings)
        alone = model.generate(**prepare(processor, images[1:], questions[1:]), **settings)
    assert batched.sequences.shape[1] > batch["input_ids"].shape[1]  # new tokens for an image
    # Padding changes nothing: the shorter prompt's first-step logits match its own run.
    torch.testing.assert_close(batched.logits[0][1], alone.logits[0][0], atol=1e-4, rtol=1e-4)


def test_loss_is_finite_and_backward_reaches_both_towers(tiny, photo):
    _, model, processor = tiny
    messages = [user_turn("Is there a person?"), {"role": "assistant", "content": "Yes."}]
    text = processor.apply_chat_template(messages)
    inputs = processor(images=[photo], text=[text], add_special_tokens=False, return_tensors="pt")
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == image_token_id(model), -100)
    loss = model(**inputs, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lm_head" in n)
    vision = [g for n, g in grads.items() if "visual" in n or "vision_tower" in n]
    assert vision and any(g is not None and g.abs().sum() > 0 for g in vision)


def test_the_image_reaches_the_logits(tiny, photo, photo_by_name):
    _, model, processor = tiny
    with torch.no_grad():
        one = model(**prepare(processor, [photo], ["What is this?"])).logits[0, -1]
        other = model(**prepare(processor, [photo_by_name("rocket")], ["What is this?"])).logits[
            0, -1
        ]
    assert one.shape == other.shape
    assert (one - other).abs().max() > 1e-6


def test_chat_template_renders_what_trl_needs(tiny):
    arch, _, processor = tiny
    prompt = [user_turn("Is there a cat?")]
    as_string = processor.apply_chat_template(
        [{"role": "user", "content": "Is there a cat?"}], add_generation_prompt=True
    )
    with_prompt = processor.apply_chat_template(prompt, add_generation_prompt=True)
    full = processor.apply_chat_template([*prompt, {"role": "assistant", "content": "No."}])
    eos = processor.tokenizer.eos_token
    assert full.startswith(with_prompt)  # TRL cuts chosen/rejected off the prompt
    assert full.rstrip().endswith(eos) and "No." in full[len(with_prompt) :]
    image_marker = {"llava": "<image>", "qwen2-vl": "<|image_pad|>"}[arch]
    assert with_prompt.count(image_marker) == 1 and image_marker not in as_string
    assert "Is there a cat?" in as_string


def test_same_seed_same_weights(tmp_path):
    first = load_file(build_tiny_model("qwen2-vl", tmp_path / "a", seed=7) / "model.safetensors")
    again = load_file(build_tiny_model("qwen2-vl", tmp_path / "b", seed=7) / "model.safetensors")
    other = load_file(build_tiny_model("qwen2-vl", tmp_path / "c", seed=8) / "model.safetensors")
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_qwen2vl_checkpoint_names_the_standard_video_processor(tiny_qwen2vl_path):
    config = json.loads((tiny_qwen2vl_path / "processor_config.json").read_text())
    assert config["processor_class"] == "Qwen2VLProcessor"
    assert config["video_processor"]["video_processor_type"] == "Qwen2VLVideoProcessor"


@pytest.mark.skipif(is_torchvision_available(), reason="the stand-in is used without torchvision")
def test_video_stand_in_pickles_and_refuses_videos(tiny_qwen2vl_path):
    processor = pickle.loads(pickle.dumps(AutoProcessor.from_pretrained(tiny_qwen2vl_path)))
    video = np.zeros((2, 56, 56, 3), dtype=np.uint8)
    with pytest.raises(ImportError, match="torchvision"):
        processor(text=["<|vision_start|><|video_pad|><|vision_end|>Hi"], videos=[video])


def test_cli_builds_and_smoke_tests(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert main(["tiny-model", "--arch", "llava", "--out", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "parameters:" in printed and "new tokens" in printed
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
