"""Every tiny family, loaded the standard way: classes, template, tokens, image, gradients."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from bpo.tiny_models import ARCHES, family, load_tiny_model

QUESTION = "What is in the image?"


@pytest.fixture(params=ARCHES)
def tiny(request, tiny_checkpoint) -> tuple[str, Any, Any]:
    """(arch, model, processor) loaded from the session's checkpoint of each family."""
    model, processor = load_tiny_model(tiny_checkpoint(request.param))
    return request.param, model.eval(), processor


def user_turn(question: str, *, image: bool = True) -> dict[str, Any]:
    content = [{"type": "image"}] if image else []
    return {"role": "user", "content": [*content, {"type": "text", "text": question}]}


def prepare(processor: Any, images: list[Any], questions: list[str]) -> Any:
    """One prompt per image, rendered by the chat template and batched by the processor."""
    prompts = [
        processor.apply_chat_template([user_turn(q)], add_generation_prompt=True) for q in questions
    ]
    # Nested, one list per prompt: the form every processor takes (Gemma 3, Idefics3,
    # SmolVLM and Mllama need it for batches). Special tokens come from the template.
    return processor(
        images=[[image] for image in images],
        text=prompts,
        padding=True,
        add_special_tokens=False,
        return_tensors="pt",
    )


def last_logits(model: Any, processor: Any, image: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(**prepare(processor, [image], [QUESTION])).logits[0, -1].float()


def test_reloads_as_the_family_checkpoint(tiny, tiny_checkpoint):
    arch, model, processor = tiny
    assert type(model).__name__ == family(arch).model_class
    saved = json.loads((tiny_checkpoint(arch) / "processor_config.json").read_text())
    assert type(processor).__name__ == saved["processor_class"]
    assert processor.tokenizer.padding_side == "left"
    assert processor.tokenizer.pad_token_id is not None
    assert model.config.get_text_config().vocab_size >= len(processor.tokenizer)
    # A few hundred thousand parameters: every family builds and runs in well under a second.
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 400_000


def test_chat_template_renders_what_trl_needs(tiny):
    arch, _, processor = tiny
    prompt = [user_turn("Is there a cat?")]
    with_prompt = processor.apply_chat_template(prompt, add_generation_prompt=True)
    full = processor.apply_chat_template([*prompt, {"role": "assistant", "content": "No."}])
    as_string = processor.apply_chat_template(
        [{"role": "user", "content": "Is there a cat?"}], add_generation_prompt=True
    )
    eos = processor.tokenizer.eos_token
    assert full.startswith(with_prompt)  # TRL cuts chosen/rejected off the prompt
    assert full.rstrip().endswith(eos) and "No." in full[len(with_prompt) :]
    marker = family(arch).image_marker
    assert with_prompt.count(marker) == 1 and marker not in as_string
    assert "Is there a cat?" in as_string


def test_chat_template_renders_a_system_prompt_and_earlier_turns(tiny):
    _, _, processor = tiny
    prompt = [
        {"role": "system", "content": "Answer briefly."},
        user_turn("What is this?"),
        {"role": "assistant", "content": "A photo."},
        {"role": "user", "content": "What is on the plate?"},
    ]
    with_prompt = processor.apply_chat_template(prompt, add_generation_prompt=True)
    full = processor.apply_chat_template([*prompt, {"role": "assistant", "content": "A cup."}])
    assert full.startswith(with_prompt) and "A cup." in full[len(with_prompt) :]
    for text in ("Answer briefly.", "What is this?", "A photo.", "What is on the plate?"):
        assert text in with_prompt


def test_special_tokens_come_from_the_template_only(tiny):
    _, _, processor = tiny
    text = processor.apply_chat_template([user_turn("Is there a cat?", image=False)])
    tokenizer = processor.tokenizer
    assert tokenizer(text)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_the_image_changes_the_logits(tiny, photo_by_name):
    # Same prompt, two real photos: the last position's logits must differ. The same photo
    # twice must not: the difference comes from the image, not from chance.
    _, model, processor = tiny
    astronaut = last_logits(model, processor, photo_by_name("astronaut"))
    rocket = last_logits(model, processor, photo_by_name("rocket"))
    again = last_logits(model, processor, photo_by_name("astronaut"))
    torch.testing.assert_close(astronaut, again)
    assert (astronaut - rocket).abs().max() > 1e-3


def test_left_padding_changes_nothing(tiny, photo_by_name):
    _, model, processor = tiny
    photos = [photo_by_name("astronaut"), photo_by_name("coffee")]
    questions = ["How many cups are in the image? Answer with a number.", "Is there a dog?"]
    batch = prepare(processor, photos, questions)
    alone = prepare(processor, photos[1:], questions[1:])
    mask = batch["attention_mask"][1]
    padding = int((mask == 0).sum())
    assert padding > 0 and not mask[:padding].any()  # the shorter prompt, padded on the left
    with torch.no_grad():
        batched = model(**batch).logits[1, -1]  # raises if image features and tokens disagree
        single = model(**alone).logits[0, -1]
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_generation_adds_tokens(tiny, photo):
    _, model, processor = tiny
    inputs = prepare(processor, [photo], [QUESTION])
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert output.shape[1] > inputs["input_ids"].shape[1]


def test_loss_backward_reaches_the_vision_tower(tiny, photo):
    _, model, processor = tiny
    model.train()
    messages = [user_turn("Is there a person?"), {"role": "assistant", "content": "Yes."}]
    text = processor.apply_chat_template(messages)
    inputs = processor(images=[[photo]], text=[text], add_special_tokens=False, return_tensors="pt")
    inputs.pop("labels", None)  # PaliGemma's processor returns some (of its suffix only)
    ids = inputs["input_ids"]
    labels = ids.masked_fill(ids == model.config.image_token_id, -100)
    loss = model(**inputs, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    vision = [g for name, g in grads.items() if "vision" in name or "visual" in name]
    assert vision and any(g is not None and g.abs().sum() > 0 for g in vision)
