"""The hf backend on tiny random checkpoints: batching, ordering, seeds, scores, errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bpo.backends import GenerationRequest, get_backend
from bpo.backends.hf import HFBackend
from bpo.errors import ConfigError

QUESTIONS = [
    "Describe the image.",
    "What color is the fork next to the knife on the table?",
    "Is there a cat?",
    "How many people are standing on the left side of the street, and what are they holding?",
]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def ask(question: str, image: Any = None, **settings: Any) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": question}], image=image, **settings)


@pytest.fixture(scope="module")
def llava(tiny_llava_path: Path) -> HFBackend:
    return HFBackend(tiny_llava_path, batch_size=16)


@pytest.fixture(scope="module")
def photos(photo_by_name: Any) -> list[Any]:
    # Small copies: the tiny processors resize to 32-84 px anyway.
    return [photo_by_name(name).resize((96, 96)) for name in PHOTOS]


def one_at_a_time(backend: HFBackend, requests: list[GenerationRequest]) -> list[str]:
    batch_size = backend.batch_size
    backend.batch_size = 1
    try:
        return backend.generate(requests)
    finally:
        backend.batch_size = batch_size


def test_greedy_batch_of_16_equals_one_at_a_time(llava: HFBackend, photos: list[Any]) -> None:
    # Questions of different lengths: left padding differs from row to row.
    requests = [
        ask(q, image, temperature=0, max_new_tokens=8) for q in QUESTIONS for image in photos
    ]
    batched = llava.complete(requests)
    assert len(batched) == len(requests) == 16
    assert [c.text for c in batched] == one_at_a_time(llava, requests)
    assert all(c.finish_reason in ("stop", "length") for c in batched)
    assert all(1 <= c.completion_tokens <= 8 for c in batched)


def test_qwen2_vl_batches_like_one_at_a_time(tiny_qwen2vl_path: Path, photos: list[Any]) -> None:
    # Qwen2-VL: images of different sizes give different numbers of image tokens.
    backend = HFBackend(tiny_qwen2vl_path)
    images = [photos[0], photos[1].resize((40, 90)), photos[2].resize((90, 30)), photos[3]]
    requests = [
        ask(q, image, temperature=0, max_new_tokens=4)
        for q, image in zip(QUESTIONS, images, strict=True)
    ]
    assert backend.generate(requests) == one_at_a_time(backend, requests)
    scores = backend.score(requests[:2], ["a cat"] * 2)
    assert all(math.isfinite(s) for s in scores)
    assert scores[0] != scores[1]


def test_mixed_settings_come_back_in_request_order(llava: HFBackend, photos: list[Any]) -> None:
    # Four groups (two lengths, with and without image), interleaved: the backend
    # regroups and re-sorts them and must put every text back in its place.
    requests = []
    for i in range(12):
        image = photos[i % 4] if i % 3 else None
        requests.append(ask(QUESTIONS[i % 4], image, temperature=0, max_new_tokens=4 + i % 2 * 3))
    completions = llava.complete(requests)
    assert len(completions) == len(requests)
    assert [c.text for c in completions] == one_at_a_time(llava, requests)
    assert len({c.text for c in completions}) > 6  # distinct texts: a mix-up would show
    for request, completion in zip(requests, completions, strict=True):
        assert completion.completion_tokens <= request.max_new_tokens


def test_sampling_is_reproducible_with_a_seed(llava: HFBackend, photos: list[Any]) -> None:
    def draw(seed: int) -> list[str]:
        return llava.generate(
            [
                ask(q, photos[0], temperature=1.0, top_p=0.9, seed=seed, max_new_tokens=8)
                for q in QUESTIONS[:2]
            ]
        )

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_a_seed_fixes_its_sample_whatever_shares_the_batch(
    llava: HFBackend, photos: list[Any]
) -> None:
    # Per-row generators: a request drawn alone, or in a batch with others in any
    # order, gives the same text. This is what makes resumed and sharded runs agree.
    requests = [
        ask(q, image, temperature=1.0, top_p=0.9, seed=100 + i, max_new_tokens=8)
        for i, (q, image) in enumerate(zip(QUESTIONS, photos, strict=True))
    ]
    batched = llava.generate(requests)
    assert batched == one_at_a_time(llava, requests)
    assert llava.generate(requests[::-1]) == batched[::-1]
    assert len(set(batched)) > 1


def test_greedy_ignores_the_seed(llava: HFBackend, photos: list[Any]) -> None:
    requests = [
        ask(QUESTIONS[1], photos[1], temperature=0, seed=seed, max_new_tokens=8) for seed in (1, 2)
    ]
    first, second = llava.generate(requests)
    assert first == second


def test_a_weakened_image_changes_the_score(llava: HFBackend, photos: list[Any]) -> None:
    from bpo.distort import distort

    clean = photos[0]
    weakened = distort(clean, "diffusion", seed=0, step=700)
    response = "A person in a white suit stands in front of a flag."
    scores = llava.score([ask(QUESTIONS[0], clean), ask(QUESTIONS[0], weakened)], [response] * 2)
    again = llava.score([ask(QUESTIONS[0], weakened)], [response])
    assert all(math.isfinite(s) and s < 0 for s in scores)
    assert scores[0] != scores[1]
    assert again[0] == scores[1]  # deterministic


def test_score_adds_log_probs_over_the_response(llava: HFBackend, photos: list[Any]) -> None:
    # log p("a cat sat") = log p("a cat") + log p(" sat" | "a cat") < log p("a cat")
    short, longer = llava.score([ask(QUESTIONS[0], photos[1])] * 2, ["a cat", "a cat sat"])
    assert longer < short
    assert llava.score([ask(QUESTIONS[0], photos[1])], [""]) == [0.0]


def test_a_control_token_in_a_question_stays_text(llava: HFBackend, photos: list[Any]) -> None:
    # "<image>" typed in a question must not claim a second image (or crash generation).
    texts = llava.generate(
        [ask("What is <image> here?", photos[0], temperature=0, max_new_tokens=3)]
    )
    assert len(texts) == 1


def test_progress_bar(llava: HFBackend, capsys: pytest.CaptureFixture[str]) -> None:
    llava.generate([ask("hi", temperature=0, max_new_tokens=2)] * 3, progress=True)
    assert "3/3" in capsys.readouterr().err


def test_text_only_model_loads_as_causal_lm(tiny_text_llm_path: Path, photos: list[Any]) -> None:
    backend = get_backend("hf", model=tiny_text_llm_path, batch_size=4)
    assert isinstance(backend, HFBackend)
    assert not backend.is_vision
    requests = [ask(q, temperature=0, max_new_tokens=6) for q in QUESTIONS]
    texts = backend.generate(requests)
    assert len(texts) == 4
    assert texts == one_at_a_time(backend, requests)
    with pytest.raises(ConfigError, match="text-only"):
        backend.generate([ask("what is this?", photos[0])])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
    ],
)
def test_bad_sampling_settings(llava: HFBackend, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        llava.generate([ask("hi", **settings)])


def test_missing_model_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory"):
        HFBackend(str(tmp_path / "no" / "model"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ConfigError, match="is a file"):
        HFBackend(weights)
    with pytest.raises(ConfigError, match="dtype"):
        HFBackend(tmp_path, dtype="float8")


def test_processor_kwargs_set_the_image_size_generation_sees(tiny_qwen2vl_path, photo):
    # A recipe's model.processor_kwargs (bpo run passes them): the negatives and the
    # answers of the base model are made at the image size training uses.
    from bpo.backends.hf import HFBackend

    size = {"longest_edge": 64 * 64, "shortest_edge": 56 * 56}
    capped = HFBackend(tiny_qwen2vl_path, processor_kwargs={"size": size})
    plain = HFBackend(tiny_qwen2vl_path)
    assert capped.processor.image_processor.size["longest_edge"] == 64 * 64
    pixels = [
        backend.processor(images=[photo], text=["x <|image_pad|>"])["pixel_values"].shape[0]
        for backend in (capped, plain)
    ]
    assert pixels[0] < pixels[1]
