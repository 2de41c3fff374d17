"""Hypothesis strategies for hostile input: JSON values, near-valid records, damaged files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

# Text that JSON can carry but UTF-8 cannot write back: lone surrogates ("\ud800"),
# which json.dumps escapes and json.loads turns back into a str.
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.text(max_size=12) | st.text(
    alphabet=st.characters(codec="utf-8") | surrogates, min_size=1, max_size=6
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | texts
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def either(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: mostly a valid one (so most records get far), sometimes any JSON."""
    return st.one_of(valid, valid, valid, valid, json_values)


# Few ids, so that duplicates are common; one with a lone surrogate.
ids = st.sampled_from(["a", "b", "7", "a~2", "a#1", " ", "", "\ud800"]) | st.integers(0, 3)
phrases = st.sampled_from(
    [
        *("<image>\nWhat is it?", "Describe.\n<image>", "<image>", "Q?", "A dog.", "", " ", "No."),
        *("A \udfff.", "<image>\n\ud83d\ude00?"),  # a lone surrogate; an emoji
    ]
)
messages = st.fixed_dictionaries(
    {
        "role": either(st.sampled_from(["user", "assistant", "system"])),
        "content": either(phrases | texts),
    }
)
prompts = either(st.lists(messages, min_size=1, max_size=3) | phrases)


def _optional(fields: dict[str, st.SearchStrategy[Any]]) -> dict[str, st.SearchStrategy[Any]]:
    return {key: either(value) for key, value in fields.items()}


llava_turns = st.fixed_dictionaries(
    {
        "from": either(st.sampled_from(["human", "gpt", "system", "user", "robot"])),
        "value": either(phrases | texts),
    }
)
llava_records = st.fixed_dictionaries(
    {"id": either(ids), "conversations": either(st.lists(llava_turns, max_size=5))},
    optional=_optional({"image": st.just("coco/1.jpg")}),
)
bpo_completions = st.fixed_dictionaries(
    {
        "response": either(phrases | texts),
        "score": either(st.sampled_from([0, 1, 0.5])),
        "type": either(st.sampled_from(["mllm-hal", "llm-hal", "gt"])),
    }
)
bpo_records = st.fixed_dictionaries(
    {"prompt": either(phrases), "completions": either(st.lists(bpo_completions, max_size=4))},
    optional=_optional({"id": ids, "image": st.just("vg/2.jpg")}),
)
sample_records = st.fixed_dictionaries(
    {"id": either(ids), "prompt": prompts, "response": either(phrases | texts)},
    optional=_optional({"image": st.just("a.jpg"), "meta": st.just({"objects": ["dog"]})}),
)
negative_records = st.fixed_dictionaries(
    {
        "id": either(ids),
        "sample_id": either(ids.map(str)),
        "strategy": either(st.sampled_from(["image-weakening", "llm-injection"])),
        "text": either(phrases | texts),
    },
    optional=_optional({"params": st.just({"seed": 1})}),
)
pair_records = st.fixed_dictionaries(
    {
        "id": either(ids),
        "prompt": prompts,
        "chosen": either(phrases | texts),
        "rejected": either(phrases | texts),
        "strategy": either(st.sampled_from(["image-weakening", "cooccurrence"])),
    },
    optional=_optional({"image": st.just("a.jpg")}),
)
RECORDS = {
    "llava": llava_records,
    "sharegpt4v": llava_records,
    "bpo": bpo_records,
    "jsonl": sample_records,
    "negative": negative_records,
    "pair": pair_records,
}


@st.composite
def files(draw: st.DrawFn, records: st.SearchStrategy[Any]) -> bytes:
    """A JSONL file or a JSON array of `records`, sometimes with raw garbage or cut short."""
    values = draw(st.lists(st.one_of(records, records, records, json_values), max_size=6))
    if draw(st.booleans()):  # JSON Lines, with a bad line here and there
        lines = [json.dumps(value).encode() for value in values]
        for _ in range(draw(st.integers(0, 2))):
            position = draw(st.integers(0, len(lines)))
            lines.insert(position, draw(st.binary(max_size=12)).replace(b"\n", b""))
        content = b"\n".join(lines) + b"\n"
    else:
        content = json.dumps(values, indent=draw(st.sampled_from([None, 1]))).encode()
    if content and draw(st.integers(0, 4)) == 0:  # cut short, as by a crash
        content = content[: draw(st.integers(0, len(content) - 1))]
    return content


def write(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path
