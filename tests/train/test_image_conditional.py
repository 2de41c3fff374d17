"""mDPO's image-conditional term and anchor: by hand, their gradient, and in `bpo train` runs."""

from __future__ import annotations

import math

import pytest
import torch

from bpo.config import load_recipe
from bpo.errors import ConfigError
from bpo.train.callbacks import read_metrics
from bpo.train.image_conditional import image_conditional_losses
from tests.train.conftest import RECIPES, PairData, tiny_recipe, write_pairs

LN2 = math.log(2)
TERMS = ("train.image_conditional_weight=1.0", "train.anchor_weight=0.5")


def test_losses_by_hand():
    # beta 0.1. Pair 0: chosen reward 0.1 x (-10 + 12) = 0.2, weakened reward 0; pair 1:
    # chosen reward 0, weakened reward 0.1 x (-3 + 5) = 0.2; pair 2 as pair 0, not weakened.
    conditional, anchor = image_conditional_losses(
        torch.tensor([-10.0, -5.0, -10.0]),
        torch.tensor([-12.0, -5.0, -12.0]),
        torch.tensor([-11.0, -3.0, -11.0]),
        torch.tensor([-11.0, -5.0, -11.0]),
        torch.tensor([1.0, 1.0, 0.0]),
        beta=0.1,
        delta=0.0,
    )
    # -log sigmoid(0.2) = log(1 + e^-0.2) = 0.598139; -log sigmoid(-0.2) = 0.798139.
    torch.testing.assert_close(conditional, torch.tensor([0.598139, 0.798139, 0.0]))
    torch.testing.assert_close(anchor, torch.tensor([0.598139, LN2, 0.598139]))
    _, anchored = image_conditional_losses(
        *(torch.tensor([v]) for v in (-10.0, -12.0, 0.0, 0.0, 1.0)), beta=0.1, delta=0.2
    )
    torch.testing.assert_close(anchored, torch.tensor([LN2]))  # reward 0.2 - delta 0.2 = 0


def _chosen_logps(model, batch):
    """Summed log-probs of the completions of a TRL-layout batch (first half: chosen)."""
    inputs = {k: v for k, v in batch.items() if k not in ("completion_mask", "is_weakened")}
    logits = model(**inputs).logits[:, :-1]
    labels = batch["input_ids"][:, 1:]
    token_logps = logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return (token_logps * batch["completion_mask"][:, 1:]).sum(dim=1)


def _conditional_gradient(tiny_llava_path, pair_data, train_cache, tmp_path, weakening):
    """The largest gradient of the image-conditional term alone on 2 pairs of the tiny LLaVA."""
    import json

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from bpo.train.collator import WEAKENED, PreferenceCollator
    from bpo.train.data import tokenize_pairs

    recipe = tiny_recipe(tiny_llava_path, pair_data, tmp_path / "run", train_cache)
    processor = AutoProcessor.from_pretrained(tiny_llava_path)
    rows = [dict(tokenize_pairs(recipe, processor).dataset[index]) for index in (0, 1)]
    for row in rows:
        row["weakening"] = json.dumps(weakening) if weakening else None
    collator = PreferenceCollator(processor, processor.tokenizer.pad_token_id, False, True)
    batch = collator(rows)
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_path, dtype=torch.float32)
    chosen = _chosen_logps(model, batch)[:2]
    weakened = _chosen_logps(model, batch[WEAKENED])
    reference = torch.tensor([-30.0, -25.0])
    conditional, _ = image_conditional_losses(
        chosen, reference, weakened, reference, torch.ones(2), beta=0.1, delta=0.0
    )
    conditional.sum().backward()
    return max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None)


def test_the_term_has_no_gradient_when_both_images_are_the_same(
    tiny_llava_path, pair_data, train_cache, tmp_path
):
    same = _conditional_gradient(tiny_llava_path, pair_data, train_cache, tmp_path, None)
    diffusion = {"kind": "diffusion", "params": {"step": 900}, "seed": 3}
    weakened = _conditional_gradient(tiny_llava_path, pair_data, train_cache, tmp_path, diffusion)
    # Measured: same image 0.0 (both sequences run the same ops), weakened image 1.12.
    assert same < 1e-7
    assert weakened > 1e-4


@pytest.fixture(scope="module")
def weakened_pairs(pair_data: PairData, tmp_path_factory: pytest.TempPathFactory) -> PairData:
    """The training pairs as image-weakening pairs, each with its diffusion and seed."""
    rows = [
        {
            **row,
            "strategy": "image-weakening",
            "weakening": {"kind": "diffusion", "params": {"step": 700}, "seed": index},
        }
        for index, row in enumerate(pair_data.rows)
    ]
    path = tmp_path_factory.mktemp("weakened") / "pairs.jsonl"
    return PairData(write_pairs(path, rows), pair_data.image_root, rows)


def _first_steps(result):
    return read_metrics(result.run_dir / "metrics.jsonl")


def test_at_the_first_step_each_term_is_log_2(
    tiny_llava_path, weakened_pairs, train_cache, tmp_path
):
    """Policy = reference at step 1 (LoRA starts at 0): every reward is 0, so DPO, the
    conditional term and the anchor are each -log sigmoid(0) = ln 2: 1 + 1 + 0.5 of it."""
    from bpo.train.runner import train

    steps = "train.max_steps=2"
    result = train(
        tiny_recipe(tiny_llava_path, weakened_pairs, tmp_path / "run", train_cache, *TERMS, steps)
    )
    first = _first_steps(result)[0]
    assert first["loss"] == pytest.approx(2.5 * LN2, abs=1e-5)
    assert first["image_conditional/loss"] == pytest.approx(LN2, abs=1e-5)
    assert first["anchor/loss"] == pytest.approx(LN2, abs=1e-5)
    assert "image_conditional/margins" in first


@pytest.mark.parametrize(
    "variant", ["train.precompute_reference=false", "train.share_prompt=false"]
)
def test_cached_reference_and_packed_layout_give_the_same_losses(
    tiny_llava_path, weakened_pairs, train_cache, tmp_path, variant
):
    """The default (cached reference, packed layout) against the reference computed at each
    step, and against TRL's layout: the same losses and terms over 4 steps."""
    from bpo.train.runner import train

    default = train(
        tiny_recipe(tiny_llava_path, weakened_pairs, tmp_path / "a", train_cache, *TERMS)
    )
    other = train(
        tiny_recipe(tiny_llava_path, weakened_pairs, tmp_path / "b", train_cache, *TERMS, variant)
    )
    ours, theirs = _first_steps(default), _first_steps(other)
    assert len(ours) == len(theirs) >= 4
    keys = ("loss", "image_conditional/loss", "image_conditional/margins", "anchor/loss")
    for mine, yours in zip(ours, theirs, strict=True):
        for key in keys:
            assert mine[key] == pytest.approx(yours[key], rel=1e-4, abs=1e-5), key
    # The terms trained something: the image margin grew from 0.
    assert ours[-1]["image_conditional/margins"] != pytest.approx(0.0, abs=1e-6)


def test_the_term_needs_pairs_that_say_how_their_image_was_weakened(
    tiny_llava_path, pair_data, train_cache, tmp_path
):
    from bpo.train.runner import train

    recipe = tiny_recipe(tiny_llava_path, pair_data, tmp_path / "run", train_cache, *TERMS)
    with pytest.raises(ConfigError, match=r"none of the 8 pairs .* 'weakening' field"):
        train(recipe)
    assert not (tmp_path / "run").exists()


def test_recipe_checks_the_weights():
    with pytest.raises(ConfigError, match=r"train\.anchor_weight must be in \[0, inf\]"):
        load_recipe(RECIPES / "tiny.yaml", ["train.anchor_weight=-1"])
    with pytest.raises(ConfigError, match=r"do not combine with train\.trl\.ld_alpha"):
        load_recipe(
            RECIPES / "tiny.yaml", ["train.image_conditional_weight=1", "train.trl={ld_alpha: 0.5}"]
        )
