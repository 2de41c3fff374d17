"""A small real dataset on disk: photos from scikit-image and captions naming objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CAPTIONS = [
    "A fork and a knife lie next to a plate on the dining table.",
    "A cat sleeps on the couch beside a remote.",
    "Two dogs run across the grass with a frisbee.",
    "A man rides a bicycle past a red car.",
    "A cup of coffee and a spoon sit on the table.",
    "A person holds an umbrella near a bus.",
    "A bowl of apples and a banana on the counter.",
    "A laptop and a keyboard on a desk with a mouse.",
]


def write_dataset(root: Path, count: int) -> Path:
    """`count` samples over real photos, as a JSONL of bpo Sample records."""
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    samples = root / "samples.jsonl"
    with samples.open("w") as handle:
        for i in range(count):
            photo = photos[i % len(photos)]
            # A different crop per sample, so every sample has its own image.
            offset = (i * 7) % 64
            crop = np.ascontiguousarray(photo[offset : offset + 256, offset : offset + 256])
            Image.fromarray(crop).resize((64, 64)).save(images / f"{i:03d}.png")
            record = {
                "id": f"s{i:03d}",
                "image": f"{i:03d}.png",
                "prompt": [{"role": "user", "content": "Describe the image briefly."}],
                "response": CAPTIONS[i % len(CAPTIONS)],
            }
            handle.write(json.dumps(record) + "\n")
    return samples


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path, 12)
