"""LLM error injection: prompts, templates, cleaning and filtering of the rewrites."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from bpo.backends import Backend, GenerationRequest
from bpo.bootstrap import sample_seed
from bpo.bootstrap.llm_injection import LlmInjector, clean_output, render_template
from bpo.data.records import Sample
from bpo.errors import BpoError, ConfigError

GOLD = "A brown dog sits on a red couch next to two cushions."
QUESTION = "What is the dog doing?"


class FakeBackend:
    """A text backend that answers each request with `reply(request, index)`."""

    name = "fake"
    model_name = "fake-llm"

    def __init__(self, reply: Callable[[GenerationRequest, int], str]) -> None:
        self.reply = reply
        self.requests: list[GenerationRequest] = []

    def generate(
        self, requests: Sequence[GenerationRequest], *, progress: bool = False
    ) -> list[str]:
        start = len(self.requests)
        self.requests.extend(requests)
        return [self.reply(request, start + i) for i, request in enumerate(requests)]

    def close(self) -> None:
        pass


def sample(sample_id: str = "s1", response: str = GOLD) -> Sample:
    return Sample(
        id=sample_id,
        image="s1.png",
        prompt=[{"role": "user", "content": f"<image>\n{QUESTION}"}],
        response=response,
    )


def replies(*texts: str) -> FakeBackend:
    return FakeBackend(lambda request, index: texts[index % len(texts)])


def test_fake_backend_follows_the_protocol() -> None:
    assert isinstance(replies("x"), Backend)


@pytest.mark.parametrize("style", ["instruction", "few-shot"])
def test_both_styles_put_the_gold_and_the_question_in_the_prompt(style: str) -> None:
    backend = replies("A black dog sits on a blue couch next to a cat.")
    injector = LlmInjector(backend, style=style)
    injector.generate([(sample(), None)], num_negatives=1, seed=0)
    [request] = backend.requests
    [message] = request.messages
    assert message["role"] == "user"
    assert GOLD in message["content"] and QUESTION in message["content"]
    assert "<image>" not in message["content"] and "{response}" not in message["content"]
    assert request.image is None


def test_the_two_styles_differ_and_few_shot_has_two_examples() -> None:
    instruction = LlmInjector(replies("x"), style="instruction").prompt(sample())
    few_shot = LlmInjector(replies("x"), style="few-shot").prompt(sample())
    assert instruction != few_shot
    assert "similar" in few_shot and few_shot.count("Question:") == 3


def test_cleaning_and_filtering_are_counted_by_reason() -> None:
    outputs = (
        "",
        "   \n ",
        "a brown dog sits on a red couch, next to two cushions",  # the gold, re-cased
        "I'm sorry, but I cannot modify this description.",
        "As an AI language model, I can't see images.",
        'Modified description: "A black dog sits on a blue couch next to three cushions."',
        "A black dog sits on a blue couch next to three cushions.",  # a repeat
        "Your image: A cat sits on a red couch.\nQuestion: What else?\nFirst image: ...",
    )
    injector = LlmInjector(replies(*outputs))
    [negatives] = injector.generate([(sample(), None)], num_negatives=len(outputs), seed=0)
    assert [n.text for n in negatives] == [
        "A black dog sits on a blue couch next to three cushions.",
        "A cat sits on a red couch.",
    ]
    assert [n.id for n in negatives] == ["s1/llm-injection/5", "s1/llm-injection/7"]
    assert injector.dropped == Counter(empty=2, unchanged=1, refusal=2, duplicate=1)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Sure! Here is the rewritten answer:\n\nA cat naps.", "A cat naps."),
        ("Here's the modified version: A cat naps.", "A cat naps."),
        ("“A cat naps.”", "A cat naps."),
        ("Rewritten answer:\nA cat naps.", "A cat naps."),
        ("The image shows:\n- a cat", "The image shows:\n- a cat"),
    ],
)
def test_clean_output(raw: str, clean: str) -> None:
    assert clean_output(raw) == clean


def test_requests_carry_sampling_settings_and_per_negative_seeds() -> None:
    backend = replies("A cat.", "A bird.")
    injector = LlmInjector(backend, style="few-shot", temperature=0.5, top_p=0.8, max_new_tokens=64)
    batch = [(sample("a"), None), (sample("b"), None)]
    results = injector.generate(batch, num_negatives=2, seed=3)
    expected_seeds = [sample_seed(3, sid, k) for sid in ("a", "b") for k in range(2)]
    assert [r.seed for r in backend.requests] == expected_seeds
    assert {(r.temperature, r.top_p, r.max_new_tokens) for r in backend.requests} == {
        (0.5, 0.8, 64)
    }
    params = results[1][1].params
    assert params == {
        "backend": "fake",
        "model": "fake-llm",
        "style": "few-shot",
        "template": None,
        "temperature": 0.5,
        "top_p": 0.8,
        "max_new_tokens": 64,
        "seed": 3,
        "sample_seed": sample_seed(3, "b", 1),
    }


def test_template_file_overrides_the_prompt(tmp_path: Path) -> None:
    path = tmp_path / "prompt.txt"
    path.write_text("Q: {question}\nA: {response}\nKeep {{braces}}; make it wrong.\n")
    backend = replies("A cat.")
    injector = LlmInjector(backend, template_path=path)
    [[negative]] = injector.generate([(sample(), None)], num_negatives=1, seed=0)
    assert backend.requests[0].messages[0]["content"] == (
        f"Q: {QUESTION}\nA: {GOLD}\nKeep {{braces}}; make it wrong."
    )
    assert negative.params["style"] == "custom"
    assert negative.params["template"] == str(path)


def test_placeholders_inside_the_gold_are_not_filled() -> None:
    text = render_template("{question} / {response}", question="Q {response}", response="R")
    assert text == "Q {response} / R"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("Rewrite this: {question}", r"\{response\}"),
        ("Rewrite {respnse} for {question}", r"unknown placeholders \{respnse\}"),
        ("Rewrite {response} {}", r"unknown placeholders \{\}"),
    ],
)
def test_bad_templates_raise_config_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prompt.txt"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        LlmInjector(replies("x"), template_path=path)


@pytest.mark.parametrize(
    "options",
    [
        {"style": "poetry"},
        {"template_path": "/nonexistent/prompt.txt"},
        {"temperature": -1.0},
        {"top_p": 0.0},
        {"max_new_tokens": 0},
    ],
)
def test_bad_settings_raise_config_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        LlmInjector(replies("x"), **options)  # type: ignore[arg-type]


def test_a_backend_returning_the_wrong_number_of_texts_is_an_error() -> None:
    backend = FakeBackend(lambda request, index: "x")
    backend.generate = lambda requests, progress=False: ["A cat."]  # type: ignore[method-assign]
    with pytest.raises(BpoError, match="1 texts for 2 requests"):
        LlmInjector(backend).generate([(sample(), None)], num_negatives=2, seed=0)


def test_through_the_real_hf_backend(tiny_llava_path: Path) -> None:
    from bpo.backends import get_backend

    backend = get_backend("hf", model=str(tiny_llava_path), batch_size=4)
    try:
        injector = LlmInjector(backend, temperature=0.0, max_new_tokens=8)
        batch = [(sample("a"), None), (sample("b", "Two cats on a bed."), None)]
        first = injector.generate(batch, num_negatives=2, seed=0)
        again = injector.generate(batch, num_negatives=2, seed=0)
    finally:
        backend.close()
    produced = sum(len(negatives) for negatives in first)
    # Every output is either a negative or counted as dropped (twice: two runs).
    assert 2 * produced + sum(injector.dropped.values()) == 2 * 4
    assert [[n.text for n in ns] for ns in first] == [[n.text for n in ns] for ns in again]
    for negatives in first:
        for negative in negatives:
            assert negative.params["backend"] == "hf"
            assert negative.params["model"] == backend.model_name
