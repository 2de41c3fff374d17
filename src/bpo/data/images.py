"""Safe image loading: paths stay inside the image root, every image comes out RGB.

Records name their image by a path relative to an image root (DESIGN.md,
"Safe by default"). `resolve_image_path` refuses a path that leaves the root, by
``../``, by an absolute path or through a symlink. `load_image` then refuses what
is missing, empty, corrupt, truncated, too large or in a format outside
`IMAGE_FORMATS`, and converts every PIL mode to 8-bit RGB. Each refusal is an `ImageError` with its own ``kind`` (so skipped
images are counted by cause) naming the record and the path.

What the conversion does, and why:

- Alpha (RGBA, LA, PA, or a palette/L/RGB image with a transparent colour) is
  composited over white. Dropping alpha would show whatever colour hides under
  the transparent pixels (often black or noise); white is what a viewer shows.
- 16-bit grayscale (``I;16*``; ``I`` is read as 16-bit samples, which is what PNG
  and TIFF decoders produce) is rescaled ``v -> round(v * 255 / 65535)``. PIL's own
  ``convert("L")`` clips everything above 255 to white.
- CMYK (including Adobe's inverted CMYK JPEGs, which PIL un-inverts on decode),
  grayscale, 1-bit and palette images go through PIL's ``convert("RGB")``.
- EXIF orientation is not applied: datasets' annotations and the reference
  implementations (LLaVA's ``Image.open(path).convert("RGB")``) use the stored pixels.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from bpo.errors import ConfigError, ImageError

if TYPE_CHECKING:
    from PIL import Image as PILImage

# PIL's own default limit (Image.MAX_IMAGE_PIXELS: 1024 * 1024 * 1024 // 4 // 3,
# ~89.5 Mpx, about 256 MiB as RGB). Ours is checked explicitly as well, because
# training code sometimes sets PIL's global to None.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3

# The formats image datasets ship in (COCO, Visual Genome, GQA, TextVQA and OpenImages
# JPEGs, OCR-VQA's GIFs and PNGs, WebP, BMP, TIFF, PPM; "JPEG" covers phones' MPO
# files too). PIL identifies some 40 more, each one more decoder facing whatever
# bytes a dataset holds (EPS even runs Ghostscript); Pillow's advice for untrusted
# files is to pass `formats` to `Image.open`.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def resolve_image_path(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None,
    *,
    record_id: str | None = None,
) -> Path:
    """The file a record's image path points to, refusing paths that leave the root.

    With an image root, the path must be relative; it is joined to the root and
    resolved (symlinks followed), and the result must lie inside the resolved
    root: absolute paths, ``../`` escapes and symlinks whose target is outside
    are all refused. Without one, the path is taken relative to the working
    directory (or as the absolute path it is), but a relative path that climbs
    out of it with ``../`` is refused all the same: no record may point outside
    the folder its paths are relative to, whichever folder that is.

    Args:
        path: the image path as written in the record.
        image_root: the folder image paths are relative to, or None (see above).
        record_id: the record the path belongs to, for the error message.

    Returns:
        The resolved path (not checked for existence; `load_image` does that).

    Raises:
        ImageError: kind ``"unsafe-path"`` for a path leaving the root (or
            absolute under a root), kind ``"bad-image-path"`` for an empty path.
    """
    text = os.fspath(path)
    if not text or not text.strip():
        raise ImageError("the image path is empty", record_id=record_id, kind="bad-image-path")

    def unsafe(reason: str) -> ImageError:
        return ImageError(reason, record_id=record_id, path=text, kind="unsafe-path")

    climbs = os.path.normpath(text).split(os.sep)[0] == os.pardir
    if image_root is None:
        if climbs and not Path(text).is_absolute():
            raise unsafe("image path leaves the folder it is relative to (via '..')")
        return Path(text)
    root = Path(image_root).resolve()
    if Path(text).is_absolute():
        raise unsafe(
            f"absolute image path, where paths are relative to the image root {str(root)!r}"
        )
    if climbs:
        raise unsafe(f"image path leaves the image root {str(root)!r} (via '..')")
    resolved = (root / text).resolve()
    if not resolved.is_relative_to(root):
        raise unsafe(
            f"image path is a symlink to {str(resolved)!r}, outside the image root {str(root)!r}"
        )
    return resolved


def check_image_root(
    records: Iterable[tuple[str, str | None]],
    image_root: str | os.PathLike[str] | None,
    *,
    flag: str = "--image-root",
) -> None:
    """Stop before any model loads when the first record's image is not where it should be.

    Every image missing means the wrong image root (or none given), not a bad
    record: one clear error now beats a model load followed by one failure per
    record. Only the first record that names an image is looked at; other faults
    (an unsafe path, a corrupt file) stay the record's own errors.

    Args:
        records: ``(record id, image path or None)`` pairs, in file order.
        image_root: the folder image paths are relative to.
        flag: the option or recipe key that sets the image root, for the message.

    Raises:
        ConfigError: when that image file does not exist.
    """
    for record_id, image in records:
        if image is None:
            continue
        try:
            resolved = resolve_image_path(image, image_root, record_id=record_id)
        except ImageError:
            return
        if not resolved.exists():
            where = (
                f"under the image root {str(Path(image_root).resolve())!r}"
                if image_root is not None
                else f"in the current folder ({flag} not given)"
            )
            raise ConfigError(
                f"record {record_id!r}: its image {image!r} is not {where}; "
                f"is {flag} the folder its image paths are relative to?"
            )
        return


def load_image(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None,
    *,
    record_id: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> PILImage.Image:
    """Open, fully decode and convert an image to RGB (see the module docstring).

    Args:
        path: the image path as written in the record.
        image_root: the folder image paths are relative to; None takes `path`
            as given, without containment check (see `resolve_image_path`).
        record_id: the record the image belongs to, for error messages.
        max_pixels: images with more pixels are refused from their header,
            before any decoding.

    Returns:
        A loaded RGB image, independent of the file.

    Raises:
        ImageError: with kind ``"unsafe-path"``, ``"missing-image"`` (no such
            file, or a directory), ``"unreadable-image"`` (no permission),
            ``"empty-image"`` (0 bytes), ``"image-too-large"`` (over `max_pixels`)
            or ``"corrupt-image"`` (not an image, a format outside `IMAGE_FORMATS`,
            truncated, broken data).
        ConfigError: when ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is True, which
            would make PIL pad truncated images silently.
    """
    resolved = resolve_image_path(path, image_root, record_id=record_id)

    def error(reason: str, kind: str) -> ImageError:
        return ImageError(reason, record_id=record_id, path=resolved, kind=kind)

    if not resolved.exists():
        raise error("image file not found", "missing-image")
    if not resolved.is_file():
        raise error("image path is not a file (a directory?)", "missing-image")
    if resolved.stat().st_size == 0:
        raise error("image file is empty (0 bytes)", "empty-image")
    return decode_image(resolved, record_id=record_id, max_pixels=max_pixels)


def decode_image(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    record_id: str | None = None,
    max_pixels: int = MAX_PIXELS,
    formats: tuple[str, ...] = IMAGE_FORMATS,
) -> PILImage.Image:
    """Decode an image file or stream to RGB, refusing bombs, broken data and other formats.

    `load_image` calls it after checking the path; `bpo serve` calls it on the bytes
    of a data URL, so both give the same pixels and refuse the same images.

    Args:
        source: a file path or a binary stream.
        record_id: the record the image belongs to, for error messages.
        max_pixels: images with more pixels are refused from their header.
        formats: the PIL formats to open (others are ``"corrupt-image"``).

    Raises:
        ImageError: kinds ``"image-too-large"``, ``"corrupt-image"`` or
            ``"unreadable-image"`` (see `load_image`).
        ConfigError: when ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is True.
    """
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ConfigError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by your code or a library): "
            "truncated images would load silently; set it back to False"
        )
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None

    def error(reason: str, kind: str) -> ImageError:
        return ImageError(reason, record_id=record_id, path=path, kind=kind)

    try:
        # PIL warns past MAX_IMAGE_PIXELS and raises past twice that; turn the
        # warning into an error too, so a bomb is refused from its header alone.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=formats) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise error(
                        f"image is {width}x{height} = {width * height} pixels, "
                        f"over the limit of {max_pixels}",
                        "image-too-large",
                    )
                image.load()
                return to_rgb(image)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as bomb:
        raise error(
            f"image too large, refused before decoding ({bomb})", "image-too-large"
        ) from None
    except Image.UnidentifiedImageError:
        raise error(
            f"not an image in a format bpo reads ({', '.join(formats)})", "corrupt-image"
        ) from None
    except PermissionError as denied:
        raise error(f"cannot read the image file ({denied.strerror})", "unreadable-image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as broken:
        # PIL reports truncated or broken data as OSError ("image file is
        # truncated"), SyntaxError ("broken PNG file") or ValueError.
        raise error(f"corrupt or truncated image ({broken})", "corrupt-image") from None


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Convert a loaded PIL image of any mode to 8-bit RGB (see the module docstring)."""
    from PIL import Image

    if image.mode == "RGB":
        return image.copy()
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in _SIXTEEN_BIT_MODES:
        import numpy as np

        samples = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        # round(v * 255 / 65535) = round(v / 257), in integers.
        eight_bit = ((samples + 128) // 257).astype(np.uint8)
        return Image.fromarray(eight_bit).convert("RGB")
    return image.convert("RGB")
