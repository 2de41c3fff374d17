"""The image loader under damaged bytes: real photos truncated and bit-flipped, random
bytes behind real headers. The outcome is an `ImageError` or an RGB image, nothing else."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from skimage import data as photos

from bpo.data.images import IMAGE_FORMATS, load_image
from bpo.errors import ImageError
from tests.property import examples


def _encoded() -> dict[str, bytes]:
    """Small crops of real photos, encoded as each format datasets use."""
    encoded = {}
    for name in ("astronaut", "chelsea", "coffee"):
        photo = Image.fromarray(getattr(photos, name)()[:96, :128]).convert("RGB")
        for format in ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"):
            buffer = io.BytesIO()
            photo.save(buffer, format)
            encoded[f"{name}.{format.lower()}"] = buffer.getvalue()
    return encoded


# PIL warns about the damage it reads past (corrupt EXIF, short TIFF tags): expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ENCODED = _encoded()
# Headers of formats outside IMAGE_FORMATS too, so their decoders are not reached.
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"II*\x00", b"RIFF"]
MAGIC += [b"%!PS-Adobe-3.0 EPSF", b"\x0a\x05\x01\x08", b"\x00\x00\x01\x00", b"8BPS"]


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as path:
        yield Path(path)


def check_load(folder: Path, content: bytes) -> None:
    (folder / "image").write_bytes(content)
    try:
        image = load_image("image", folder, record_id="r")
    except ImageError as error:
        assert error.record_id == "r" and error.kind in (
            "corrupt-image", "empty-image", "image-too-large"
        )  # fmt: skip
        return
    assert image.mode == "RGB" and image.width > 0 and image.height > 0
    np.asarray(image)  # the pixels are there


@examples(60)
@given(
    name=st.sampled_from(sorted(ENCODED)),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6),
)
def test_damaged_photos_load_or_raise_image_error(
    folder: Path, name: str, cut: float, flips: list[tuple[float, int]]
) -> None:
    content = bytearray(ENCODED[name])
    content = content[: max(1, int(len(content) * cut))] if cut < 0.95 else content
    for where, byte in flips:
        content[min(len(content) - 1, int(len(content) * where))] = byte
    check_load(folder, bytes(content))


@examples(60)
@given(magic=st.sampled_from([b"", *MAGIC]), rest=st.binary(max_size=300))
def test_random_bytes_behind_real_headers(folder: Path, magic: bytes, rest: bytes) -> None:
    check_load(folder, magic + rest)


def test_truncated_photos_at_every_tenth_are_refused(folder: Path) -> None:
    for name in ("astronaut.png", "chelsea.jpeg"):
        content = ENCODED[name]
        for tenth in range(1, 10):
            (folder / "cut").write_bytes(content[: len(content) * tenth // 10])
            with pytest.raises(ImageError) as caught:
                load_image("cut", folder)
            assert caught.value.kind == "corrupt-image"


@pytest.mark.parametrize("format", ["PCX", "ICO", "TGA", "SGI", "EPS"])
def test_formats_outside_the_list_are_refused(folder: Path, format: str) -> None:
    # Was: any of PIL's ~45 formats was decoded (EPS through Ghostscript, if installed).
    buffer = io.BytesIO()
    image = Image.fromarray(photos.astronaut()[:32, :32])
    if format == "EPS":  # writing EPS needs no Ghostscript; reading it would
        buffer.write(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n")
    else:
        image.save(buffer, format)
    (folder / "other").write_bytes(buffer.getvalue())
    with pytest.raises(ImageError, match="not an image in a format bpo reads") as caught:
        load_image("other", folder)
    assert caught.value.kind == "corrupt-image" and format not in IMAGE_FORMATS


def test_phone_mpo_files_still_load(folder: Path) -> None:
    first = Image.fromarray(photos.chelsea()[:32, :32])
    first.save(folder / "phone.jpg", "MPO", save_all=True, append_images=[first.rotate(90)])
    assert Image.open(folder / "phone.jpg").format == "MPO"
    assert load_image("phone.jpg", folder).size == (32, 32)
