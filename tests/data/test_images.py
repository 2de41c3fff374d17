"""Safe image loading: every mode to RGB, every unsafe or broken file refused by kind."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data as photos

from bpo.data.images import load_image, resolve_image_path
from bpo.errors import ConfigError, ErrorPolicy, ImageError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    return folder


def refused(path: str, image_root: Path | None, kind: str, *, record_id: str = "rec-7") -> str:
    """Load `path`, expect an ImageError of `kind` naming the record and the path."""
    with pytest.raises(ImageError) as caught:
        load_image(path, image_root, record_id=record_id)
    message = str(caught.value)
    assert caught.value.kind == kind, message
    assert record_id in message
    assert Path(path).name in message
    return message


# --- modes -> RGB ------------------------------------------------------------------


def test_grayscale_becomes_rgb_with_equal_channels(root: Path) -> None:
    gray = photos.camera()
    Image.fromarray(gray).save(root / "camera.png")
    image = load_image("camera.png", root)
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], gray)


def test_rgba_is_composited_on_white(root: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent red: white once composited
    rgba[0, 1] = (0, 0, 255, 128)  # half-transparent blue over white
    rgba[1, 0] = (0, 255, 0, 255)  # opaque green stays green
    Image.fromarray(rgba).save(root / "alpha.png")
    pixels = np.asarray(load_image("alpha.png", root)).astype(int)
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    expected = np.round(np.array([0, 0, 255]) * 128 / 255 + 255 * (1 - 128 / 255))
    np.testing.assert_allclose(pixels[0, 1], expected, atol=1)
    assert tuple(pixels[1, 0]) == (0, 255, 0)


def test_palette_with_transparency(root: Path) -> None:
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.save(root / "palette.png", transparency=0)
    pixels = np.asarray(load_image("palette.png", root))
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # the transparent index
    assert tuple(pixels[2, 2]) == (200, 30, 40)


def test_sixteen_bit_png_is_rescaled_not_clipped(root: Path) -> None:
    values = np.array([[0, 257 * 100, 65535, 32768]], dtype=np.uint16)
    Image.fromarray(values).save(root / "deep.png")
    assert Image.open(root / "deep.png").mode.startswith("I")
    pixels = np.asarray(load_image("deep.png", root))[0, :, 0]
    assert pixels.tolist() == [0, 100, 255, 128]


def test_cmyk_jpeg(root: Path) -> None:
    photo = photos.chelsea()
    Image.fromarray(photo).convert("CMYK").save(root / "cat.jpg", quality=95)
    assert Image.open(root / "cat.jpg").mode == "CMYK"
    image = load_image("cat.jpg", root)
    assert image.mode == "RGB" and image.size == (photo.shape[1], photo.shape[0])
    error = np.abs(np.asarray(image).astype(int) - photo.astype(int)).mean()
    assert error < 8, f"mean error {error:.1f} (inverted CMYK would be ~100)"


@pytest.mark.parametrize(
    ("mode", "suffix"), [("LA", "png"), ("1", "png"), ("P", "png"), ("I", "tif"), ("RGB", "bmp")]
)
def test_other_modes(root: Path, mode: str, suffix: str) -> None:
    source = Image.fromarray(photos.astronaut()[:64, :48]).convert(mode)
    source.save(root / f"mode.{suffix}")
    assert Image.open(root / f"mode.{suffix}").mode == mode
    image = load_image(f"mode.{suffix}", root)
    assert image.mode == "RGB" and image.size == (48, 64)
    if mode in ("P", "RGB"):  # no precision lost on the way: close to the original
        reference = np.asarray(source.convert("RGB")).astype(int)
        assert np.abs(np.asarray(image).astype(int) - reference).mean() < 1


# --- broken files ------------------------------------------------------------------


def test_truncated_jpeg(root: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(photos.astronaut()).save(buffer, "JPEG")
    (root / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert "truncated" in refused("cut.jpg", root, "corrupt-image")


def test_truncated_images_setting_is_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (4, 4)).save(root / "ok.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ConfigError, match="LOAD_TRUNCATED_IMAGES"):
        load_image("ok.png", root)


def test_zero_byte_file(root: Path) -> None:
    (root / "empty.png").write_bytes(b"")
    refused("empty.png", root, "empty-image")


def test_not_an_image(root: Path) -> None:
    (root / "notes.png").write_text("not a picture")
    refused("notes.png", root, "corrupt-image")


def test_missing_file(root: Path) -> None:
    assert "not found" in refused("nowhere.jpg", root, "missing-image")


def test_directory(root: Path) -> None:
    (root / "folder.jpg").mkdir()
    assert "not a file" in refused("folder.jpg", root, "missing-image")


def _png_header(width: int, height: int) -> bytes:
    """A PNG with only an IHDR chunk: a size claim and no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [100_000, 12_000])  # past twice PIL's limit, and past once
def test_decompression_bomb_header(root: Path, side: int) -> None:
    (root / "bomb.png").write_bytes(_png_header(side, side))
    # No pixel data follows the header: "image-too-large" (not "corrupt-image")
    # shows that the size alone was refused, before any decoding.
    refused("bomb.png", root, "image-too-large")


def test_pixel_limit_is_ours_too(root: Path) -> None:
    Image.new("RGB", (40, 30)).save(root / "small.png")
    with pytest.raises(ImageError) as caught:
        load_image("small.png", root, record_id="r", max_pixels=1000)
    assert caught.value.kind == "image-too-large" and "40x30" in str(caught.value)


# --- paths that leave the root -----------------------------------------------------


def test_dotdot_escape(root: Path) -> None:
    Image.new("RGB", (4, 4)).save(root.parent / "secret.png")
    assert "'..'" in refused("../secret.png", root, "unsafe-path")


def test_absolute_path_outside_root(root: Path) -> None:
    outside = root.parent / "elsewhere.png"
    Image.new("RGB", (4, 4)).save(outside)
    assert "absolute" in refused(str(outside), root, "unsafe-path")


def test_absolute_path_inside_root_is_refused_too(root: Path) -> None:
    # Under an image root every path is relative to it: an absolute one is a record
    # that was not written for this root, wherever it points.
    Image.new("RGB", (4, 4)).save(root / "inside.png")
    assert "absolute" in refused(str(root / "inside.png"), root, "unsafe-path")


def test_dotdot_escape_without_a_root(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root)
    for path in ("../../etc/passwd", "a/../../x.png", ".."):
        assert "'..'" in refused(path, None, "unsafe-path")
    Image.new("RGB", (4, 4)).save(root / "here.png")
    (root / "sub").mkdir()
    assert load_image("sub/../here.png", None).size == (4, 4)  # stays inside


def test_absolute_path_without_a_root_is_taken_as_given(root: Path) -> None:
    Image.new("RGB", (4, 4)).save(root / "inside.png")
    assert load_image(str(root / "inside.png"), None).size == (4, 4)


def test_check_image_root_names_the_record_and_the_flag(root: Path) -> None:
    from bpo.data.images import check_image_root
    from bpo.errors import ConfigError

    Image.new("RGB", (4, 4)).save(root / "a.png")
    check_image_root([("t", None), ("s1", "a.png")], root)  # found: nothing to say
    check_image_root([("s1", "../a.png")], root)  # unsafe: the record's own error, later
    with pytest.raises(ConfigError, match=r"record 's1'.*'a.png'.*--image-root"):
        check_image_root([("s1", "a.png")], None)
    with pytest.raises(ConfigError, match=r"samples\.image_root"):
        check_image_root([("s1", "b.png")], root, flag="samples.image_root")


def test_symlink_leaving_root(root: Path) -> None:
    outside = root.parent / "target.png"
    Image.new("RGB", (4, 4)).save(outside)
    (root / "link.png").symlink_to(outside)
    assert "symlink" in refused("link.png", root, "unsafe-path")


def test_symlink_inside_root_is_fine(root: Path) -> None:
    (root / "sub").mkdir()
    Image.new("RGB", (4, 4)).save(root / "sub" / "real.png")
    (root / "alias.png").symlink_to(root / "sub" / "real.png")
    assert resolve_image_path("alias.png", root) == (root / "sub" / "real.png").resolve()
    assert load_image("alias.png", root).size == (4, 4)


def test_no_root_takes_paths_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (5, 3)).save(tmp_path / "free.png")
    assert load_image(str(tmp_path / "free.png"), None).size == (5, 3)
    monkeypatch.chdir(tmp_path)
    assert resolve_image_path("free.png", None) == Path("free.png")
    # Relative paths stay inside the folder they are relative to, root or not.
    refused(os.path.join("..", tmp_path.name, "free.png"), None, "unsafe-path")


def test_skip_policy_counts_bad_images_by_kind(root: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (4, 4)).save(root / name)
    (root / "empty.png").write_bytes(b"")
    records = {
        "1": "a.png",
        "2": "missing.png",
        "3": "b.png",
        "4": "../escape.png",
        "5": "empty.png",
        "6": "c.png",
        "7": "gone.png",
    }
    policy = ErrorPolicy(on_error="skip")
    loaded = []
    for record_id, path in records.items():
        try:
            loaded.append(load_image(path, root, record_id=record_id))
        except ImageError as error:
            policy.handle(error)
    assert len(loaded) == 3
    assert policy.total == 4
    assert policy.counts == {"missing-image": 2, "unsafe-path": 1, "empty-image": 1}
    assert [entry["record_id"] for entry in policy.skipped] == ["2", "4", "5", "7"]
