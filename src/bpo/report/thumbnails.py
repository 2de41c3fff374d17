"""Images for the page: loaded safely, weakened as the negative was, shrunk, inlined.

An image is loaded with `bpo.data.images.load_image` (paths may not leave the
image root) from the first image root that holds it. The weakened image a
negative came from is not stored by `bpo bootstrap`: it is made again from the
provenance the negative carries (``params.distortion = {"kind", "params",
"seed"}``, see `bpo.distort.describe`), which `bpo.distort.distort` reproduces
exactly. It is weakened at full size, as the model saw it, then shrunk.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo.errors import BpoError, ImageError

if TYPE_CHECKING:
    from PIL import Image as PILImage

# Longest side of a thumbnail: two side by side fit a pair's card, and ~150 of them
# (a 3-strategy gallery) weigh about 3 MB as JPEG.
THUMBNAIL_SIDE = 256
# Images this small (the toy world's 48 px scenes) are kept as lossless PNG and
# shown enlarged with crisp pixels; larger ones become JPEG.
SMALL_SIDE = 128
JPEG_QUALITY = 82


@dataclass(frozen=True)
class Thumbnail:
    """An inlined image (`uri`) or the reason it could not be made (`error`)."""

    uri: str | None = None
    small: bool = False
    error: str | None = None


def load_from_roots(
    path: str, roots: Sequence[Path | None], *, record_id: str | None = None
) -> PILImage.Image:
    """The image at `path` under the first root that has it (see `load_image`).

    Raises:
        ImageError: the image's error under the first root, if no root has it
            (a path leaving a root is refused at once).
    """
    from bpo.data.images import load_image

    first: ImageError | None = None
    for root in roots:
        try:
            return load_image(path, root, record_id=record_id)
        except ImageError as error:
            if error.kind != "missing-image":
                raise
            first = first or error
    if first is None:
        raise ImageError("no image root to look in", record_id=record_id, path=path)
    raise first


def encode(image: PILImage.Image, side: int = THUMBNAIL_SIDE) -> Thumbnail:
    """`image` shrunk to at most `side` pixels (aspect kept) as a data URI."""
    from PIL import Image

    small = max(image.size) <= SMALL_SIDE
    copy = image.copy()
    copy.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if small:
        copy.save(buffer, format="PNG", optimize=True)
        mime = "image/png"
    else:
        copy.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        mime = "image/jpeg"
    uri = f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return Thumbnail(uri=uri, small=small)


def weaken(image: PILImage.Image, distortion: Mapping[str, Any]) -> PILImage.Image:
    """The weakened image described by a negative's ``params.distortion``.

    Raises:
        BpoError: an unknown distortion or bad parameters (`ConfigError`), or a
            provenance that is not ``{"kind", "params", "seed"}``.
    """
    from bpo.distort import distort

    kind, params, seed = (
        distortion.get("kind"),
        distortion.get("params") or {},
        distortion.get("seed", 0),
    )
    if not isinstance(kind, str) or not isinstance(params, Mapping) or not isinstance(seed, int):
        raise BpoError(f"unreadable distortion provenance {dict(distortion)!r}")
    return distort(image, kind, seed=seed, **params)


def thumbnails(
    path: str | None,
    roots: Sequence[Path | None],
    distortion: Mapping[str, Any] | None,
    *,
    record_id: str,
) -> tuple[Thumbnail, Thumbnail | None]:
    """The original and (with a distortion) the weakened thumbnail of a record's image.

    Failures do not stop the report: they become `Thumbnail.error`, shown on the page.
    """
    if path is None:
        return Thumbnail(error="no image (text-only record)"), None
    try:
        image = load_from_roots(path, roots, record_id=record_id)
    except ImageError as error:
        failed = Thumbnail(error=str(error))
        return failed, failed if distortion is not None else None
    original = encode(image)
    if distortion is None:
        return original, None
    try:
        weakened = weaken(image, distortion)
    except BpoError as error:
        return original, Thumbnail(error=f"cannot weaken the image again: {error}")
    return original, encode(weakened)
