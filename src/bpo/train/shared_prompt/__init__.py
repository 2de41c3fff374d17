"""Shared-prompt forward pass: each pair's prompt, image included, runs once for both responses.

TRL's DPOTrainer batches a pair as two sequences, ``[prompt | chosen]`` and
``[prompt | rejected]``: the prompt runs twice, and with it the image tokens
(576 of the ~700 tokens of a LLaVA-1.5 pair) and the vision tower. Here a pair
is one sequence ``[prompt | chosen | p | rejected]``, where ``p`` is a copy of the
prompt's last token, and a 4D attention mask lets each response see the prompt
but not the other response:

- prompt tokens attend to the prompt as in TRL's layout: causally, and both ways
  within a bidirectional block (Gemma 3: each image's tokens; PaliGemma: the whole
  prompt, its prefix);
- chosen tokens attend to the prompt and causally to the chosen response;
- ``p`` attends to the prompt without its last token, and to itself: the same
  context, token and position as that last token, so it computes the same key,
  value and hidden state, and its next-token prediction scores the first
  rejected token (TRL scores it from the prompt's last token);
- rejected tokens attend to the prompt without its last token, to ``p`` and
  causally to the rejected response (so the last prompt token is counted once);
- in sliding-window layers, a token attends only to the keys it would reach in
  TRL's layout: the window is measured in TRL's positions, not in the packed ones.

Positions continue the prompt's in both responses, from the position TRL's layout
gives the first response token (1D RoPE: the prompt length, plus one for
PaliGemma's 1-based positions; multimodal RoPE: the prompt's positions and offset
from the model's own ``get_rope_index``). The per-token outputs of the model's
fused LM head (TRL's `add_fused_lm_head`) are then scattered back into TRL's
``[chosen; rejected]`` layout, so TRL's loss and metrics run unchanged. A pair costs
``P + C + R + 1`` tokens instead of ``2P + C + R`` (padded), and one pass of the
vision tower instead of two; the per-token log-probs and the gradients are those of
the two-sequence batch (tests/train/test_shared_prompt.py and
test_shared_prompt_families.py check both, per family).

This needs the model's position ids and attention masks to be under our control:
`bpo.train.shared_prompt.families` lists the families that are (1D RoPE,
multimodal RoPE, bidirectional image and prefix blocks) and says why the others are
not (`shared_prompt_refusal`); those fall back to TRL's layout.

Modules: `packing` (the packed ids, labels and index into TRL's layout; no model
needed, the collator calls it), `layout` (masks and positions from the lengths),
`families` (what each model family needs), `forward` (`SharedPromptForward`, the
stand-in for the model in TRL's calls).
"""

from __future__ import annotations

from bpo.train.shared_prompt.families import (
    ATTENTION_KERNELS,
    FAMILIES,
    PackedFamily,
    shared_prompt_refusal,
    supports_shared_prompt,
)
from bpo.train.shared_prompt.forward import SharedPromptForward
from bpo.train.shared_prompt.layout import (
    block_ids,
    shared_prompt_mask,
    shared_prompt_positions,
    trl_positions,
)
from bpo.train.shared_prompt.packing import pack_pairs, pack_token_types

__all__ = [
    "ATTENTION_KERNELS",
    "FAMILIES",
    "PackedFamily",
    "SharedPromptForward",
    "block_ids",
    "pack_pairs",
    "pack_token_types",
    "shared_prompt_mask",
    "shared_prompt_positions",
    "shared_prompt_refusal",
    "supports_shared_prompt",
    "trl_positions",
]
