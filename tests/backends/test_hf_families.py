"""The hf backend on every tiny family: generation through the processor, stops, scores, guards."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from bpo import processing
from bpo.backends import GenerationRequest
from bpo.backends.hf import HFBackend
from bpo.errors import ConfigError
from bpo.tiny_models import available_arches, family

# The token each family's chat template closes an assistant's turn with (the hub
# templates; PaliGemma's answer, its processor's suffix, ends with EOS).
END_OF_TURN = {
    "llava": "</s>",
    "llava-next": "</s>",
    "llava-onevision": "<|im_end|>",
    "qwen2-vl": "<|im_end|>",
    "qwen2.5-vl": "<|im_end|>",
    "qwen3-vl": "<|im_end|>",
    "gemma3": "<end_of_turn>",
    "idefics3": "<end_of_utterance>",
    "internvl": "<|im_end|>",
    "mistral3": "</s>",
    "mllama": "<|eot_id|>",
    "paligemma": "<eos>",
    "smolvlm": "<end_of_utterance>",
}
# Processors that cannot encode their image token written in a prompt as text, in
# transformers 5.24 (see bpo.backends.hf): such prompts are refused.
CANNOT_SANITIZE = {"idefics3", "internvl", "mllama", "paligemma"}
QUESTIONS = (
    "Describe the image.",
    "How many people are standing on the left, and what do they hold?",
)


def ask(question: str, image: Any, **settings: Any) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": question}], image=image, **settings)


@pytest.fixture(scope="module", params=available_arches())
def backend(request: pytest.FixtureRequest, tiny_checkpoint: Any) -> HFBackend:
    hf = HFBackend(tiny_checkpoint(request.param), batch_size=4)
    hf.arch = request.param  # type: ignore[attr-defined]
    return hf


@pytest.fixture(scope="module")
def images(photo_by_name: Any) -> list[Any]:
    # Two shapes: different numbers of image tokens (Qwen, LLaVA-NeXT, Idefics3, Pixtral ...).
    return [photo_by_name("astronaut").resize((64, 48)), photo_by_name("coffee").resize((40, 90))]


def test_batched_greedy_generation_equals_one_at_a_time(backend: HFBackend, images: list[Any]):
    requests = [
        ask(question, image, temperature=0, max_new_tokens=5)
        for question, image in zip(QUESTIONS, images, strict=True)
    ]
    # Every input the processor makes reaches generate (PaliGemma's token_type_ids, which
    # make its prompt a bidirectional prefix, were lost to sanitize_control_tokens).
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}]
    text = backend.processor.apply_chat_template(
        prompt, add_generation_prompt=True, chat_template=backend.chat_template
    )
    expected = set(backend.processor(text=[text], images=[images[0]])) - {"labels"}
    assert set(backend._inputs(requests[:1])) == expected
    batched = backend.complete(requests)
    backend.batch_size = 1
    try:
        alone = backend.complete(requests)
    finally:
        backend.batch_size = 4
    assert [c.text for c in batched] == [c.text for c in alone]
    assert all(1 <= c.completion_tokens <= 5 for c in batched)


@pytest.fixture
def end_of_turn_at_step(backend: HFBackend) -> Iterator[int]:
    """Makes the family's end-of-turn token the most likely one from the 3rd generated token on."""
    token_id = backend.tokenizer.convert_tokens_to_ids(END_OF_TURN[backend.arch])  # type: ignore[attr-defined]
    calls = {"count": 0}

    def boost(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        calls["count"] += 1  # call 1 scores the prompt (and picks token 1)
        if calls["count"] >= 3:
            output = output.clone()
            output[..., -1, token_id] = output[..., -1, :].max() + 100.0
        return output

    handle = backend.model.get_output_embeddings().register_forward_hook(boost)
    try:
        yield 3
    finally:
        handle.remove()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generation_stops_at_the_end_of_turn_token(
    backend: HFBackend, images: list[Any], end_of_turn_at_step: int, temperature: float
):
    arch = backend.arch  # type: ignore[attr-defined]
    assert backend.end_of_turn == END_OF_TURN[arch]
    assert backend.tokenizer.convert_tokens_to_ids(END_OF_TURN[arch]) in backend.stop_token_ids
    request = ask(QUESTIONS[0], images[0], temperature=temperature, seed=0, max_new_tokens=12)
    (completion,) = backend.complete([request])
    assert completion.finish_reason == "stop"
    assert completion.completion_tokens == end_of_turn_at_step
    assert END_OF_TURN[arch] not in completion.text


def test_score_is_the_log_prob_of_a_plain_forward_pass(backend: HFBackend, images: list[Any]):
    # The response as the template writes it after the prompt (end of turn included), so
    # prompt + response is the processor's own full text (PaliGemma: its suffix and EOS).
    processor, image = backend.processor, images[1]
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}]
    answer = "A cup of coffee on a white plate."
    prompt_text = processor.apply_chat_template(
        prompt, add_generation_prompt=True, chat_template=backend.chat_template
    )
    if processing.is_prefix_lm(processor):
        response = answer + processor.tokenizer.eos_token
        inputs = processor(
            text=[prompt_text], images=[[image]], suffix=[answer], return_tensors="pt"
        )
        start = int((inputs["token_type_ids"][0] == 0).sum())
    else:
        full = processor.apply_chat_template(
            [*prompt, {"role": "assistant", "content": answer}], chat_template=backend.chat_template
        )
        response = full[len(prompt_text) :]
        start = len(processor(text=[prompt_text], images=[[image]])["input_ids"][0])
        inputs = processor(text=[full], images=[[image]], return_tensors="pt")
    inputs.pop("labels", None)
    with torch.no_grad():
        logits = backend.model(**inputs).logits[0, start - 1 : -1].float()
    targets = inputs["input_ids"][0, start:]
    expected = float(logits.log_softmax(-1).gather(1, targets.unsqueeze(1)).sum())
    (score,) = backend.score([ask("Hi?", image)], [response])
    assert score == pytest.approx(expected, abs=1e-4)


def test_a_control_token_in_a_prompt_stays_text_or_is_refused(
    backend: HFBackend, images: list[Any]
):
    arch = backend.arch  # type: ignore[attr-defined]
    marker = family(arch).image_marker
    image_token_id = backend.tokenizer.convert_tokens_to_ids(backend.processor.image_token)
    plain = backend._inputs([ask("What is here?", images[0])])
    assert backend.sanitizes_control_tokens == (arch not in CANNOT_SANITIZE)
    request = ask(f"What is {marker} here?", images[0], temperature=0, max_new_tokens=2)
    if arch in CANNOT_SANITIZE:
        with pytest.raises(ConfigError, match="control token"):
            backend.generate([request])
        return
    marked = backend._inputs([request])
    # The marker is text: no extra image tokens, a longer prompt.
    count = [int((x["input_ids"] == image_token_id).sum()) for x in (plain, marked)]
    assert count[0] == count[1] > 0
    assert marked["input_ids"].shape[1] > plain["input_ids"].shape[1]
    assert len(backend.generate([request])) == 1


def test_paligemma_without_a_chat_template_takes_its_documented_format(
    tiny_checkpoint: Any, tmp_path: Path, images: list[Any]
):
    # The hub's PaliGemma checkpoints ship no chat template.
    if "paligemma" not in available_arches():
        pytest.skip("paligemma cannot be built here")
    bare = tmp_path / "paligemma"
    shutil.copytree(tiny_checkpoint("paligemma"), bare)
    for template in bare.glob("chat_template.*"):
        template.unlink()
    backend = HFBackend(bare)
    assert backend.processor.chat_template is None
    assert backend.chat_template == processing.PALIGEMMA_PROMPT_FORMAT
    templated = HFBackend(tiny_checkpoint("paligemma"))
    requests = [ask(q, images[0], temperature=0, max_new_tokens=4) for q in QUESTIONS]
    ids = backend._inputs(requests)["input_ids"]
    assert ids.tolist() == templated._inputs(requests)["input_ids"].tolist()
    assert backend.generate(requests) == templated.generate(requests)
