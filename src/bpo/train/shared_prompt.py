"""Shared-prompt forward pass: each pair's prompt, image included, runs once for both responses.

TRL's DPOTrainer batches a pair as two sequences, ``[prompt | chosen]`` and
``[prompt | rejected]``: the prompt runs twice, and with it the image tokens
(576 of the ~700 tokens of a LLaVA-1.5 pair) and the vision tower. Here a pair
is one sequence ``[prompt | chosen | p | rejected]``, where ``p`` is a copy of the
prompt's last token, and a 4D attention mask lets each response see the prompt
but not the other response:

- prompt tokens attend causally to the prompt;
- chosen tokens attend to the prompt and causally to the chosen response;
- ``p`` attends to the prompt without its last token, and to itself: the same
  context, token and position as that last token, so it computes the same key,
  value and hidden state, and its next-token prediction scores the first
  rejected token (TRL scores it from the prompt's last token);
- rejected tokens attend to the prompt without its last token, to ``p`` and
  causally to the rejected response (so the last prompt token is counted once).

Positions continue the prompt's in both responses. The per-token outputs of the
model's fused LM head (TRL's `add_fused_lm_head`) are then scattered back into
TRL's ``[chosen; rejected]`` layout, so TRL's loss and metrics run unchanged.
A pair costs ``P + C + R + 1`` tokens instead of ``2P + C + R`` (padded), and one
pass of the vision tower instead of two; the log-probs and gradients are those of
the two-sequence batch (tests/train/test_shared_prompt.py checks both).

This needs the model's position ids and 4D masks to be under our control:
LLaVA (1D positions) and Qwen2-VL (multimodal RoPE) are supported, with the
``sdpa`` and ``eager`` attention kernels. Other models fall back to TRL's layout.
"""

from __future__ import annotations

from typing import Any

import torch

# model_type -> how its positions are computed: "text" (0, 1, 2 ...) or "mrope" (Qwen2-VL's
# multimodal RoPE, from the model's get_rope_index).
POSITION_KINDS = {"llava": "text", "qwen2_vl": "mrope"}
ATTENTION_KERNELS = ("sdpa", "eager")
# Keys of TRL's layout that the packed sequence replaces.
_TRL_LAYOUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids", "labels")
_PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def supports_shared_prompt(model: Any) -> bool:
    """Whether `model` (a transformers VLM, unwrapped) runs with the shared-prompt layout."""
    config = model.config
    kernel = getattr(config, "_attn_implementation", None) or "sdpa"
    return config.model_type in POSITION_KINDS and kernel in ATTENTION_KERNELS


def pack_pairs(
    prompts: list[list[int]],
    chosens: list[list[int]],
    rejecteds: list[list[int]],
    pad_token_id: int,
    width: int,
) -> dict[str, torch.Tensor]:
    """The packed batch of pairs, and where each token of TRL's layout comes from.

    Args:
        prompts, chosens, rejecteds: token ids per pair.
        pad_token_id: the id that pads packed sequences on the right.
        width: ``L``, the width of TRL's layout for these pairs (its outputs have ``L - 1``).

    Returns:
        ``packed_input_ids`` and ``packed_labels`` (B, T); ``packed_lengths`` (B, 3): P,
        C and R per pair; ``packed_index`` (2B, L - 1): for each scored position of
        TRL's layout, its index in the flattened (B, T - 1) outputs of the packed
        batch, -1 where TRL scores nothing.
    """
    sequences, labels, lengths = [], [], []
    for prompt, chosen, rejected in zip(prompts, chosens, rejecteds, strict=True):
        sequences.append(prompt + chosen + prompt[-1:] + rejected)
        labels.append([-100] * len(prompt) + chosen + [-100] + rejected)
        lengths.append((len(prompt), len(chosen), len(rejected)))
    total = max(len(sequence) for sequence in sequences)
    batch = len(sequences)
    input_ids = torch.full((batch, total), pad_token_id, dtype=torch.long)
    packed_labels = torch.full((batch, total), -100, dtype=torch.long)
    index = torch.full((2 * batch, width - 1), -1, dtype=torch.long)
    for b, (sequence, label, (p, c, r)) in enumerate(zip(sequences, labels, lengths, strict=True)):
        input_ids[b, : len(sequence)] = torch.tensor(sequence)
        packed_labels[b, : len(label)] = torch.tensor(label)
        row = b * (total - 1)
        # TRL's position t predicts token t + 1 of [prompt | response]; response token j sits at
        # t = p - 1 + j. Here chosen token j is predicted at p - 1 + j (the same place), and
        # rejected token j at p + c + j (the copy of the last prompt token for j = 0).
        index[b, p - 1 : p - 1 + c] = row + torch.arange(p - 1, p - 1 + c)
        index[batch + b, p - 1 : p - 1 + r] = row + torch.arange(p + c, p + c + r)
    return {
        "packed_input_ids": input_ids,
        "packed_labels": packed_labels,
        "packed_lengths": torch.tensor(lengths, dtype=torch.long),
        "packed_index": index,
    }


def pack_token_types(
    prompt_types: list[list[int]], lengths: torch.Tensor, total: int
) -> torch.Tensor:
    """Per-token type ids of the packed sequences: the prompt's, then 0 (text) for the rest."""
    types = torch.zeros((len(prompt_types), total), dtype=torch.long)
    for b, row in enumerate(prompt_types):
        types[b, : len(row)] = torch.tensor(row)
    return types


def shared_prompt_mask(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """The (B, 1, T, T) boolean mask of the packed layout (True: may attend); see the module doc."""
    device = lengths.device
    positions = torch.arange(total, device=device)
    p, c, r = (lengths[:, i].view(-1, 1) for i in range(3))
    # Segments: 0 prompt, 1 chosen, 2 copy of the last prompt token, 3 rejected, 4 padding.
    segment = torch.full((lengths.size(0), total), 4, dtype=torch.long, device=device)
    segment = torch.where(positions < p + c + 1 + r, 3, segment)
    segment = torch.where(positions == p + c, 2, segment)
    segment = torch.where(positions < p + c, 1, segment)
    segment = torch.where(positions < p, 0, segment)
    query, key = segment.unsqueeze(2), segment.unsqueeze(1)
    causal = positions.view(1, -1, 1) >= positions.view(1, 1, -1)
    last_prompt = positions.view(1, 1, -1) == (p - 1).unsqueeze(2)  # (B, 1, T)
    rejected_side = (query == 2) | (query == 3)
    sees_prompt = (key == 0) & ~(rejected_side & last_prompt)
    sees_chosen = (query == 1) & (key == 1)
    sees_rejected = rejected_side & ((key == 2) | (key == 3))
    padding_self = (query == 4) & (positions.view(1, -1, 1) == positions.view(1, 1, -1))
    allowed = causal & (sees_prompt | sees_chosen | sees_rejected) & (query != 4)
    return (allowed | padding_self).unsqueeze(1)


def shared_prompt_positions(
    lengths: torch.Tensor, prompt_positions: torch.Tensor, total: int
) -> torch.Tensor:
    """Position ids of the packed layout from those of the prompts.

    Args:
        lengths: (B, 3) prompt, chosen and rejected lengths.
        prompt_positions: (..., B, T) positions valid on each prompt (1D: (B, T); Qwen2-VL's
            multimodal RoPE: (3, B, T)).
        total: T.

    Responses continue the prompt as text does (every component + 1 per token); the
    copy of the last prompt token takes that token's position.
    """
    positions = torch.arange(total, device=lengths.device)
    p, c = lengths[:, 0:1], lengths[:, 1:2]
    last = prompt_positions.gather(-1, (p - 1).expand(*prompt_positions.shape[:-1], 1))
    offset = torch.where(positions < p + c, positions - p + 1, positions - (p + c + 1) + 1)
    offset = torch.where(positions == p + c, 0, offset).clamp(min=0)
    after = last + offset
    return torch.where(positions < p, prompt_positions, after)


class SharedPromptForward:
    """Calls a VLM with the packed layout and returns TRL's fused-LM-head output in TRL's layout.

    Stands in for the model in `trl.DPOTrainer`'s ``model(**inputs, labels=...,
    fused_lm_head=True)`` calls: it reads the ``packed_*`` keys of the batch
    (`pack_pairs`), ignores TRL's layout keys, and returns a `FusedCausalLMOutput`
    whose per-token fields have TRL's (2B, L - 1) shape.

    Args:
        model: the model to call (PEFT, DDP or DeepSpeed wrapped, with TRL's fused head).
        base: the underlying transformers model (for its config and position ids).
    """

    def __init__(self, model: Any, base: Any) -> None:
        self.model = model
        self.base = base
        self.kind = POSITION_KINDS[base.config.model_type]
        self.kernel = getattr(base.config, "_attn_implementation", None) or "sdpa"

    def _prompt_positions(self, inputs: dict[str, Any], lengths: torch.Tensor) -> torch.Tensor:
        ids = inputs["packed_input_ids"]
        total = ids.size(1)
        if self.kind == "text":
            return torch.arange(total, device=ids.device).expand(ids.size(0), -1)
        in_prompt = torch.arange(total, device=ids.device).unsqueeze(0) < lengths[:, 0:1]
        positions, _ = self.base.model.get_rope_index(
            input_ids=ids,
            mm_token_type_ids=inputs["packed_mm_token_type_ids"],
            image_grid_thw=inputs.get("image_grid_thw"),
            attention_mask=in_prompt.long(),
        )
        return positions

    def __call__(self, **inputs: Any) -> Any:
        from trl.trainer.utils import FusedCausalLMOutput

        lengths = inputs["packed_lengths"]
        ids = inputs["packed_input_ids"]
        total = ids.size(1)
        mask = shared_prompt_mask(lengths, total)
        if self.kernel == "eager":  # additive float mask
            dtype = self.base.dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=ids.device).masked_fill(
                ~mask, torch.finfo(dtype).min
            )
        positions = shared_prompt_positions(lengths, self._prompt_positions(inputs, lengths), total)
        kwargs = {
            key: value
            for key, value in inputs.items()
            if key not in _TRL_LAYOUT_KEYS and not key.startswith("packed_")
        }
        if "packed_mm_token_type_ids" in inputs:
            kwargs["mm_token_type_ids"] = inputs["packed_mm_token_type_ids"]
        kwargs["use_cache"] = False
        outputs = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            labels=inputs["packed_labels"],
            **kwargs,
        )
        index = inputs["packed_index"]
        valid = index >= 0
        safe = index.clamp(min=0)
        fields: dict[str, Any] = {}
        for name in _PER_TOKEN_FIELDS:
            value = getattr(outputs, name, None)
            if value is not None:
                gathered = value.reshape(-1)[safe.reshape(-1)].view(index.shape)
                fields[name] = gathered.masked_fill(~valid, 0)
        return FusedCausalLMOutput(
            log_probs=fields.get("log_probs"),
            entropy=fields.get("entropy"),
            log_sum_sq_probs=fields.get("log_sum_sq_probs"),
            mean_logits=fields.get("mean_logits"),
            is_top1=fields.get("is_top1"),
            label_mask=valid,
            aux_loss=getattr(outputs, "aux_loss", None),
        )
