"""The packed batch of pairs: ids, labels, lengths and the index of each TRL-layout output.

Pure bookkeeping on token ids (no model): `bpo.train.data.PreferenceCollator` calls it.
The layout is ``[prompt | chosen | p | rejected]`` per pair, right-padded; see
`bpo.train.shared_prompt` for why and for the invariant.
"""

from __future__ import annotations

import torch


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
