"""The BPO release export: pairs grouped per (image, prompt, gold answer).

The format of github.com/pipilurj/bootstrapped-preference-optimization-BPO, described in
`bpo.exports`.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from bpo.data.records import Pair
from bpo.errors import ErrorPolicy
from bpo.exports.common import IMAGE_TOKEN, ExportResult, export_name, write_json_array
from bpo.pairs import records_with_lines, stable_hash

# Our strategy -> the release's completion "type" (data_generation/ of the BPO
# repository: run_llava_image_weakening.py writes "mllm-hal", error_injection.py
# "llm-hal"); the inverse of what `bpo.data.formats.read_bpo_release` maps.
RELEASE_TYPES = {"image-weakening": "mllm-hal", "llm-injection": "llm-hal"}
RELEASE_GOLD_TYPE = "gt"


def release_prompt(pair: Pair) -> str | None:
    """The release's prompt string ``"question\\n<image>"``, or None if it cannot hold the prompt.

    The release holds one question about one image: no system prompt, no earlier turns.
    """
    if len(pair.prompt) != 1 or pair.image is None:
        return None
    return f"{pair.prompt[0]['content']}\n{IMAGE_TOKEN}"


def export_bpo_release(
    pairs_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    policy: ErrorPolicy | None = None,
) -> ExportResult:
    """Export pairs in the BPO release format, grouped per (image, prompt, gold answer).

    Pairs whose prompt is more than one user message (a system prompt, earlier
    turns) or that have no image cannot be written in this format: they are left
    out and counted. Grouping streams in two passes: the first maps each group (a
    64-bit hash of image, prompt and gold answer) to the lines of its pairs, the
    second reads each group's lines back by their byte offsets; no text is held.

    Args:
        pairs_path: the pairs JSONL file.
        out_dir: where ``<name>_bpo.json`` is written.
        name: the prefix of the output (default: the pairs file's stem).
        policy: what to do with a bad pair (default: raise).
    """
    policy = policy or ErrorPolicy()
    pairs_path, out_dir = Path(pairs_path), Path(out_dir)
    target = out_dir / f"{export_name(name, pairs_path)}_bpo.json"
    result = ExportResult("bpo", [target])

    # group (a hash of image, prompt and gold answer) -> the lines of its pairs
    groups: dict[int, list[int]] = {}
    for line, pair in records_with_lines(pairs_path, Pair, policy=policy):
        prompt = release_prompt(pair)
        if prompt is None or pair.image is None:
            result.left_out["no-image" if pair.image is None else "multi-turn-prompt"] += 1
            continue
        groups.setdefault(stable_hash(pair.image, prompt, pair.chosen), []).append(line)

    offsets = array("q")  # byte offset of each line: 8 bytes per pair
    with open(pairs_path, "rb") as handle:
        position = 0
        for raw in handle:
            offsets.append(position)
            position += len(raw)

    def read_pair(handle: BinaryIO, line: int) -> Pair:
        handle.seek(offsets[line - 1])
        return Pair.from_dict(json.loads(handle.readline()))

    def records() -> Iterator[dict[str, Any]]:
        with open(pairs_path, "rb") as handle:
            for lines in groups.values():
                pairs = [read_pair(handle, line) for line in lines]  # one group at a time
                first = pairs[0]
                gold = {"score": 1, "response": first.chosen, "type": RELEASE_GOLD_TYPE}
                negatives = [
                    {
                        "score": 0,
                        "response": pair.rejected,
                        "type": RELEASE_TYPES.get(pair.strategy, pair.strategy),
                    }
                    for pair in pairs
                ]
                result.pairs += len(pairs)
                yield {
                    "prompt": release_prompt(first),
                    "image": first.image,
                    "completions": [gold, *negatives],
                }

    result.rows = write_json_array(target, records())
    return result
