"""mDPO's image-conditional term and anchor (Wang et al. 2024, "mDPO: Conditional Preference
Optimization for Multimodal Large Language Models"), on BPO's weakened images.

BPO's image-weakening negatives are answers to a weakened image I'; the pair already says
which distortion, parameters and seed made it, so I' is rebuilt for free
(`bpo.train.collator.weakened_images`). With r(y | I) = beta x (log pi(y | x, I) -
log pi_ref(y | x, I)), the terms added to TRL's DPO loss, per pair, are:

- image-conditional, for the pairs whose image was weakened:
  -log sigmoid(r(y_w | I) - r(y_w | I')): the same gold answer preferred given the real
  image over given the weakened one, which trains exactly "look at the image";
- anchor, on every pair (as in mDPO): -log sigmoid(r(y_w | I) - delta), which keeps the
  gold answer's reward above delta (DPO alone may lower both responses' likelihoods).

The loss of a batch is TRL's plus ``conditional_weight x mean(conditional) +
anchor_weight x mean(anchor)`` over its pairs (a pair without a weakened image adds 0 to
the first mean): with both weights at 0 (the default) it is the paper's BPO loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bpo.config import Recipe
from bpo.errors import ConfigError


@dataclass(frozen=True)
class ImageTerms:
    """The weights and threshold of the two terms (recipe: ``train.image_conditional_weight``,
    ``train.anchor_weight``, ``train.anchor_delta``)."""

    conditional_weight: float = 0.0
    anchor_weight: float = 0.0
    anchor_delta: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.conditional_weight or self.anchor_weight)


def image_conditional_losses(
    chosen_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    weakened_logps: torch.Tensor,
    ref_weakened_logps: torch.Tensor,
    is_weakened: torch.Tensor,
    *,
    beta: float,
    delta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair image-conditional and anchor losses, each of shape (B,).

    Args:
        chosen_logps: log pi(y_w | x, I), summed over the gold answer's tokens.
        ref_chosen_logps: the reference's log pi_ref(y_w | x, I).
        weakened_logps: log pi(y_w | x, I') on the weakened image.
        ref_weakened_logps: log pi_ref(y_w | x, I').
        is_weakened: 1.0 where the pair's image was weakened, 0.0 elsewhere (no term).
        beta: DPO's beta.
        delta: the anchor's threshold.
    """
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    weakened_rewards = beta * (weakened_logps - ref_weakened_logps)
    conditional = -F.logsigmoid(chosen_rewards - weakened_rewards) * is_weakened
    anchor = -F.logsigmoid(chosen_rewards - delta)
    return conditional, anchor


def summed_logps(log_probs: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence log-probs of the completions from TRL's fused-head per-token output.

    TRL's ``log_probs`` (B, L - 1) are 0 off the completion (its labels are -100 there) and
    may be prefixed by prompt-learning PEFT's virtual tokens; summed as `trl.DPOTrainer` does.
    """
    return log_probs[:, -(completion_mask.size(1) - 1) :].sum(dim=1)


def check_weakened(dataset: Any, recipe: Recipe) -> str:
    """How many training pairs carry a weakened image's provenance; a ConfigError if none.

    Raises:
        ConfigError: when ``train.image_conditional_weight`` is set and no pair has a
            ``weakening`` (pairs of other strategies, or built before pairs carried it).
    """
    column = dataset["weakening"] if "weakening" in dataset.column_names else []
    count = sum(1 for value in column if value)
    if not count:
        raise ConfigError(
            f"train.image_conditional_weight is {recipe.train.image_conditional_weight}, but none "
            f"of the {len(dataset)} pairs of {recipe.data.pairs} says which weakened image its "
            "rejected answer came from (a 'weakening' field): build the pairs with `bpo pairs` "
            "from image-weakening negatives"
        )
    return f"image-conditional term on {count} of {len(dataset)} pairs (weakened images)"
