import json

import pytest
from PIL import Image

from tests.exports.examples import SIZES, make_pairs


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    from skimage import data

    root = tmp_path_factory.mktemp("images")
    # An RGB JPEG (its bytes are kept) and a grayscale PNG (stored as an RGB PNG).
    Image.fromarray(data.astronaut()).resize(SIZES["astronaut.jpg"]).save(root / "astronaut.jpg")
    Image.fromarray(data.camera()).resize(SIZES["camera.png"]).save(root / "camera.png")
    return root


@pytest.fixture
def pairs_path(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in make_pairs()), encoding="utf-8")
    return path
