"""Masks and positions of the packed layout, from the per-pair lengths (see `bpo.train.shared_prompt`).

Everything here is a function of ``lengths`` (B, 3): the prompt, chosen and rejected
lengths P, C and R of each packed row ``[prompt | chosen | p | rejected | padding]``.
"""

from __future__ import annotations

import torch

# Segments of a packed row.
PROMPT, CHOSEN, COPY, REJECTED, PADDING = range(5)


def segments(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(B, T) segment of each packed token: PROMPT, CHOSEN, COPY (of the last prompt token),
    REJECTED or PADDING."""
    positions = torch.arange(total, device=lengths.device)
    p, c, r = (lengths[:, i].view(-1, 1) for i in range(3))
    segment = torch.full((lengths.size(0), total), PADDING, dtype=torch.long, device=lengths.device)
    segment = torch.where(positions < p + c + 1 + r, REJECTED, segment)
    segment = torch.where(positions == p + c, COPY, segment)
    segment = torch.where(positions < p + c, CHOSEN, segment)
    return torch.where(positions < p, PROMPT, segment)


def shared_prompt_positions(
    lengths: torch.Tensor, prompt_positions: torch.Tensor, start: torch.Tensor, total: int
) -> torch.Tensor:
    """Position ids of the packed layout from those of the prompts.

    Args:
        lengths: (B, 3) prompt, chosen and rejected lengths.
        prompt_positions: (..., B, T) positions valid on each prompt (1D: (B, T); Qwen's
            multimodal RoPE: (3, B, T)); read where the prompt is.
        start: (B, 1) the position TRL's layout gives the first response token (every
            component of a multimodal position takes it, as text does).
        total: T.

    Response token j takes ``start + j`` in both responses, as in TRL's two sequences;
    the copy of the last prompt token takes that token's position; padding continues
    the rejected response's count (no scored token attends to it).
    """
    positions = torch.arange(total, device=lengths.device)
    p, c = lengths[:, 0:1], lengths[:, 1:2]
    last = prompt_positions.gather(-1, (p - 1).expand(*prompt_positions.shape[:-1], 1))
    offset = torch.where(positions < p + c, positions - p, positions - (p + c + 1)).clamp(min=0)
    after = torch.where(positions == p + c, last, start + offset)
    return torch.where(positions < p, prompt_positions, after)


def trl_positions(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(B, T) index of each packed token in its TRL sequence ``[prompt | response]`` (from 0).

    The distance a sliding window measures: in TRL's layout, ``q_idx - kv_idx`` of
    transformers' `masking_utils.sliding_window_overlay`.
    """
    arange = torch.arange(total, device=lengths.device).expand(lengths.size(0), -1)
    return shared_prompt_positions(lengths, arange, lengths[:, 0:1], total)


def block_ids(in_block: torch.Tensor, *, contiguous_groups: bool) -> torch.Tensor:
    """(B, T) bidirectional block of each token, -1 for none: tokens of one block see each other.

    Args:
        in_block: (B, T) bool, the tokens that belong to some block (only prompt tokens).
        contiguous_groups: each run of consecutive block tokens is its own block (Gemma 3:
            one per image, as `modeling_gemma3.get_block_sequence_ids_for_mask`), else all
            are one block (PaliGemma's prefix: ``torch.where(token_type_ids == 0, 0, -1)``
            in `PaliGemmaModel.forward`).
    """
    if not contiguous_groups:
        return torch.where(in_block, 0, -1)
    previous = torch.nn.functional.pad(in_block, (1, 0), value=False)[:, :-1]
    group = torch.cumsum((in_block & ~previous).long(), dim=1) - 1
    return torch.where(in_block, group, -1)


def shared_prompt_mask(
    lengths: torch.Tensor,
    total: int,
    *,
    blocks: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """The (B, 1, T, T) boolean mask of the packed layout (True: may attend); see the package doc.

    Args:
        lengths: (B, 3) prompt, chosen and rejected lengths.
        total: T.
        blocks: (B, T) bidirectional block ids of the prompt tokens (`block_ids`), -1 for
            none; within the prompt, a token also sees the later tokens of its block, as
            transformers' `masking_utils.blockwise_overlay` ORs onto the causal mask.
        window: a sliding window (transformers' ``sliding_window``): a token sees a key
            only if the key is less than `window` positions before it in TRL's layout,
            ANDed after the blocks, as `modeling_gemma3.create_masks_for_vision_model`.
    """
    device = lengths.device
    positions = torch.arange(total, device=device)
    segment = segments(lengths, total)
    query, key = segment.unsqueeze(2), segment.unsqueeze(1)
    causal = positions.view(1, -1, 1) >= positions.view(1, 1, -1)
    last_prompt = positions.view(1, 1, -1) == (lengths[:, 0:1] - 1).unsqueeze(2)  # (B, 1, T)
    rejected_side = (query == COPY) | (query == REJECTED)
    sees_prompt = (key == PROMPT) & ~(rejected_side & last_prompt)
    sees_chosen = (query == CHOSEN) & (key == CHOSEN)
    sees_rejected = rejected_side & ((key == COPY) | (key == REJECTED))
    allowed = causal & (sees_prompt | sees_chosen | sees_rejected)
    if blocks is not None:
        in_prompt = segment == PROMPT
        block = torch.where(in_prompt, blocks, -1)
        same_block = (block.unsqueeze(2) == block.unsqueeze(1)) & (block.unsqueeze(2) >= 0)
        allowed = allowed | same_block
    if window is not None:
        index = trl_positions(lengths, total)
        allowed = allowed & (index.unsqueeze(1) > index.unsqueeze(2) - window)
    allowed = allowed & (query != PADDING)
    # Padding rows see themselves only: never scored, and no row without a key (NaN in sdpa).
    padding_self = (query == PADDING) & (positions.view(1, -1, 1) == positions.view(1, 1, -1))
    return (allowed | padding_self).unsqueeze(1)
