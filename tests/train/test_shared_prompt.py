"""The shared-prompt layout by hand: packed ids, index into TRL's layout, masks and positions.

Every family's log-probs and gradients against TRL's layout: test_shared_prompt_families.py.
"""

from __future__ import annotations

import torch

from bpo.train.shared_prompt import (
    block_ids,
    pack_pairs,
    shared_prompt_mask,
    shared_prompt_positions,
    trl_positions,
)

# Prompt [1, 2, 3], chosen [4], rejected [5, 6]: packed [1, 2, 3, 4, 3', 5, 6].
PROMPT, CHOSEN, REJECTED = [1, 2, 3], [4], [5, 6]


def _mask(**options) -> list[list[int]]:
    packed = pack_pairs([PROMPT], [CHOSEN], [REJECTED], pad_token_id=0, width=5)
    return shared_prompt_mask(packed["packed_lengths"], 7, **options)[0, 0].int().tolist()


def test_mask_and_index_of_one_pair_by_hand():
    # Prompt [1, 2], chosen [3], rejected [4, 5]: packed [1, 2, 3, 2', 4, 5].
    packed = pack_pairs([[1, 2]], [[3]], [[4, 5]], pad_token_id=0, width=4)
    assert packed["packed_input_ids"].tolist() == [[1, 2, 3, 2, 4, 5]]
    assert packed["packed_labels"].tolist() == [[-100, -100, 3, -100, 4, 5]]
    # TRL scores chosen 3 at position 1 (after 2); rejected 4 at 1 and 5 at 2.
    assert packed["packed_index"].tolist() == [[-1, 1, -1], [-1, 3, 4]]
    mask = shared_prompt_mask(packed["packed_lengths"], 6)[0, 0].int().tolist()
    assert mask == [
        [1, 0, 0, 0, 0, 0],  # 1
        [1, 1, 0, 0, 0, 0],  # 2
        [1, 1, 1, 0, 0, 0],  # 3 (chosen) sees the prompt
        [1, 0, 0, 1, 0, 0],  # 2' sees what 2 saw, and itself
        [1, 0, 0, 1, 1, 0],  # 4 sees the prompt through 2', not 3
        [1, 0, 0, 1, 1, 1],  # 5
    ]


def test_padding_rows_see_only_themselves():
    packed = pack_pairs([[1, 2], [1, 2, 3]], [[3], [4]], [[4], [5]], pad_token_id=0, width=5)
    assert packed["packed_input_ids"].tolist() == [[1, 2, 3, 2, 4, 0], [1, 2, 3, 4, 3, 5]]
    mask = shared_prompt_mask(packed["packed_lengths"], 6)[0, 0].int().tolist()
    assert mask[5] == [0, 0, 0, 0, 0, 1]
    assert all(row[5] == 0 for row in mask[:5])  # no real token sees the padding


def test_blocks_open_the_prompt_both_ways_and_only_the_prompt():
    # PaliGemma's prefix: the whole prompt one block (responses are not in it).
    prefix = block_ids(
        torch.tensor([[True, True, True, False, False, False, False]]), contiguous_groups=False
    )
    assert prefix.tolist() == [[0, 0, 0, -1, -1, -1, -1]]
    assert _mask(blocks=prefix) == [
        [1, 1, 1, 0, 0, 0, 0],  # 1 sees the whole prompt, as in TRL's prefix
        [1, 1, 1, 0, 0, 0, 0],  # 2
        [1, 1, 1, 0, 0, 0, 0],  # 3
        [1, 1, 1, 1, 0, 0, 0],  # 4 (chosen): causal after the prompt
        [1, 1, 0, 0, 1, 0, 0],  # 3' sees what 3 sees: 1, 2 and (as itself) 3
        [1, 1, 0, 0, 1, 1, 0],  # 5
        [1, 1, 0, 0, 1, 1, 1],  # 6
    ]
    # Even a block id on response tokens opens nothing outside the prompt.
    assert _mask(blocks=torch.zeros(1, 7, dtype=torch.long)) == _mask(blocks=prefix)


def test_image_blocks_are_runs_of_image_tokens():
    # Gemma 3 (modeling_gemma3.get_block_sequence_ids_for_mask): one block per run.
    images = torch.tensor([[False, True, True, False, True, False, False]])
    blocks = block_ids(images, contiguous_groups=True)
    assert blocks.tolist() == [[-1, 0, 0, -1, 1, -1, -1]]
    packed = pack_pairs([[1, 2, 3, 4, 5]], [[6]], [[7]], pad_token_id=0, width=7)
    mask = shared_prompt_mask(
        packed["packed_lengths"], 8, blocks=torch.cat([blocks, blocks[:, :1]], 1)
    )
    rows = mask[0, 0].int().tolist()
    assert rows[1] == [1, 1, 1, 0, 0, 0, 0, 0]  # the first image's tokens see each other
    assert rows[2] == [1, 1, 1, 0, 0, 0, 0, 0]
    assert rows[3] == [1, 1, 1, 1, 0, 0, 0, 0]  # text between images: causal
    assert rows[4] == [1, 1, 1, 1, 1, 0, 0, 0]  # the second image sees the first, not after


def test_sliding_window_counts_trl_positions():
    # In TRL's [prompt | rejected] = [1, 2, 3, 5, 6], 6 is at 4 and 3 at 2. With a window of 2,
    # 6 sees 5 and itself; packed, 6 is at index 6, 3' at 4: the window is TRL's, not the packed one.
    lengths = pack_pairs([PROMPT], [CHOSEN], [REJECTED], pad_token_id=0, width=5)["packed_lengths"]
    assert trl_positions(lengths, 7).tolist() == [[0, 1, 2, 3, 2, 3, 4]]
    assert _mask(window=2) == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0, 0],  # 4 (chosen, TRL position 3) sees 3 and itself
        [0, 1, 0, 0, 1, 0, 0],  # 3' sees 2 and itself, as 3 does
        [0, 0, 0, 0, 1, 1, 0],  # 5 (position 3) sees 3' and itself
        [0, 0, 0, 0, 0, 1, 1],  # 6
    ]


def test_positions_continue_from_the_first_response_position():
    lengths = pack_pairs([PROMPT], [CHOSEN], [REJECTED], pad_token_id=0, width=5)["packed_lengths"]
    # A multimodal prompt (3, B, T): components differ on the image; TRL's first response
    # token takes max + 1 = 9 in every component (get_rope_index's offset).
    prompt = torch.tensor(
        [[[0, 4, 8, 0, 0, 0, 0]], [[0, 5, 6, 0, 0, 0, 0]], [[0, 3, 8, 0, 0, 0, 0]]]
    )
    positions = shared_prompt_positions(lengths, prompt, torch.tensor([[9]]), 7)
    assert positions[:, 0].tolist() == [
        [0, 4, 8, 9, 8, 9, 10],
        [0, 5, 6, 9, 6, 9, 10],  # the copy 3' keeps the last prompt token's position
        [0, 3, 8, 9, 8, 9, 10],
    ]
