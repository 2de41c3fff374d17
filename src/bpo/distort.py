"""Image distortions that weaken the visual evidence, chosen by name.

BPO's image-weakened prompting (Pi et al., ECCV 2024, Sec. 3.2) asks the model
its question about a *weakened* image, so that its answer falls back on the
language prior. The paper weakens images with forward diffusion noise; the other
distortions here (blur, downsample, colour jitter, crop, mask) are weakenings
other works use, offered for ablations.

Every distortion is a pure function of (image, parameters, seed): the same
inputs give the same bytes, and no global random state is read or changed.
`DISTORTIONS` maps each name to a `Distortion`, which knows its parameters
(defaults, ranges) and validates them; `distort` dispatches by name and
`describe` gives the provenance a negative carries.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from bpo.data.images import to_rgb
from bpo.errors import ConfigError

__all__ = [
    "DIFFUSION_STEPS",
    "DISTORTIONS",
    "Distortion",
    "Param",
    "blur",
    "crop",
    "describe",
    "diffusion",
    "diffusion_noise_array",
    "diffusion_schedule",
    "distort",
    "downsample",
    "get_distortion",
    "jitter",
    "mask",
    "output_tag",
    "parse_params",
    "preview_grid",
    "resolve_params",
]

ParamValue = int | float

# --------------------------------------------------------------------------- diffusion

# The noise schedule of the paper's release, which took it from Visual Contrastive
# Decoding (Leng et al., CVPR 2024; DAMO-NLP-SG/VCD, vcd_utils/vcd_add_noise.py):
# T = 1000 steps, betas = sigmoid(linspace(-6, 6, T)) * (5e-3 - 1e-5) + 1e-5.
DIFFUSION_STEPS = 1000
_BETA_MIN, _BETA_MAX = 1e-5, 5e-3


@functools.cache
def diffusion_schedule() -> np.ndarray:
    """The cumulative signal fraction ``abar_t = prod_{s<=t} (1 - beta_s)``, t = 0..999.

    Returns:
        A read-only float64 array of length 1000, decreasing from ~1 (t = 0) to
        ~0.07 (t = 999). Computed once and cached.
    """
    ramp = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, DIFFUSION_STEPS)))
    betas = ramp * (_BETA_MAX - _BETA_MIN) + _BETA_MIN
    abar = np.cumprod(1.0 - betas)
    abar.flags.writeable = False
    return abar


def _to_rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise ConfigError(f"expected a PIL image, got {type(image).__name__}")
    return to_rgb(image)  # alpha over white, 16-bit scaled, as images are loaded


def diffusion_noise_array(image: Image.Image, step: int = 500, seed: int = 0) -> np.ndarray:
    """Forward diffusion of `image` to `step`, as floats before any clipping.

    Implements the closed form of the forward process (Ho et al., 2020, eq. 4),
    which the BPO paper uses for image weakening (Sec. 3.2):
    ``x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps``, ``eps ~ N(0, I)``,
    with pixels scaled to [-1, 1] (the DDPM convention) and one independent
    normal draw per pixel and channel.

    Args:
        image: the clean image (converted to RGB).
        step: the diffusion step t, 0..999.
        seed: seeds `numpy.random.default_rng`; same seed, same noise.

    Returns:
        A float32 array of shape (height, width, 3) in [-1, 1]-space (unclipped).
    """
    abar = float(diffusion_schedule()[step])
    x0 = np.asarray(_to_rgb(image), dtype=np.float32) / np.float32(127.5) - np.float32(1.0)
    eps = np.random.default_rng(seed).standard_normal(x0.shape, dtype=np.float32)
    return np.float32(math.sqrt(abar)) * x0 + np.float32(math.sqrt(1.0 - abar)) * eps


def diffusion(image: Image.Image, *, seed: int = 0, step: int = 500) -> Image.Image:
    """Forward diffusion noise at step `step`, back to 8-bit RGB (clipped, rounded).

    The release's image-weakening script (data_generation/run_llava_image_weakening.py)
    does not do what the paper describes: depending on the version it passes the
    noised image only as ``images_cd`` to VCD's contrastive sampler (contrastive
    decoding against the clean image) or not at all, and always decodes with the
    clean image. It also noised the CLIP-normalised tensor, not the pixels. bpo
    follows the paper: noise the pixels in [-1, 1], then sample normally on them.

    Args:
        image: the clean image.
        seed: seeds the noise.
        step: the diffusion step t, 0..999 (default 500; the paper uses high steps,
            the release's default was 900). t = 0 is nearly the identity.
    """
    noised = diffusion_noise_array(image, step, seed)
    pixels = np.clip(np.rint((noised + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


# --------------------------------------------------------------------------- the others


def blur(image: Image.Image, *, seed: int = 0, radius: float = 4.0) -> Image.Image:
    """Gaussian blur.

    Args:
        image: the clean image.
        seed: unused (deterministic); accepted so every distortion has one signature.
        radius: the standard deviation of the Gaussian, in pixels (default 4.0; 0 = none).
    """
    return _to_rgb(image).filter(ImageFilter.GaussianBlur(radius))


def downsample(image: Image.Image, *, seed: int = 0, factor: float = 8.0) -> Image.Image:
    """Shrink by `factor`, then enlarge back to the original size.

    Area averaging (BOX) on the way down, so the detail is really lost rather than
    aliased; bicubic on the way up, as VLM processors resize.

    Args:
        image: the clean image.
        seed: unused (deterministic).
        factor: how many times smaller the intermediate image is per side (default 8.0;
            1 = none).
    """
    rgb = _to_rgb(image)
    small_size = (max(1, round(rgb.width / factor)), max(1, round(rgb.height / factor)))
    small = rgb.resize(small_size, Image.Resampling.BOX)
    return small.resize(rgb.size, Image.Resampling.BICUBIC)


def jitter(
    image: Image.Image,
    *,
    seed: int = 0,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
) -> Image.Image:
    """Random colour jitter, with torchvision ``ColorJitter``'s meaning of the amounts.

    Brightness, contrast and saturation are scaled by a factor drawn uniformly from
    ``[max(0, 1 - amount), 1 + amount]``; the hue is rotated by a fraction of the
    colour wheel drawn from ``[-hue, hue]``. Unlike torchvision the order is fixed
    (brightness, contrast, saturation, hue), so the seed alone fixes the result.

    Args:
        image: the clean image.
        seed: seeds the four draws.
        brightness: amount of brightness change (default 0.4; 0 = none).
        contrast: amount of contrast change (default 0.4).
        saturation: amount of saturation change (default 0.4).
        hue: largest hue rotation, as a fraction of the wheel, 0..0.5 (default 0.1).
    """
    rng = np.random.default_rng(seed)
    out = _to_rgb(image)
    for enhancer, amount in (
        (ImageEnhance.Brightness, brightness),
        (ImageEnhance.Contrast, contrast),
        (ImageEnhance.Color, saturation),
    ):
        factor = rng.uniform(max(0.0, 1.0 - amount), 1.0 + amount)
        out = enhancer(out).enhance(factor)
    shift = round(rng.uniform(-hue, hue) * 256)  # PIL's 8-bit HSV: hue 0..255 wraps around
    if shift % 256:
        hsv = np.asarray(out.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 256
        out = Image.fromarray(hsv, "HSV").convert("RGB")
    return out


def _random_box(
    rng: np.random.Generator, size: tuple[int, int], fraction: float
) -> tuple[int, int, int, int]:
    """A box of `fraction` of the area, with the image's aspect ratio, at a random place."""
    width, height = size
    side = math.sqrt(fraction)
    box_width = min(width, max(1, round(width * side)))
    box_height = min(height, max(1, round(height * side)))
    left = int(rng.integers(0, width - box_width + 1))
    top = int(rng.integers(0, height - box_height + 1))
    return left, top, left + box_width, top + box_height


def crop(image: Image.Image, *, seed: int = 0, scale: float = 0.5) -> Image.Image:
    """Keep a random region of `scale` of the area, resized back to the original size.

    The region keeps the image's aspect ratio (unlike ``RandomResizedCrop``), so
    objects are cut out, not stretched.

    Args:
        image: the clean image.
        seed: seeds the region's position.
        scale: the fraction of the area kept, 0.01..1 (default 0.5; 1 = none).
    """
    rgb = _to_rgb(image)
    box = _random_box(np.random.default_rng(seed), rgb.size, scale)
    return rgb.crop(box).resize(rgb.size, Image.Resampling.BICUBIC)


_MASK_GREY = (128, 128, 128)


def mask(image: Image.Image, *, seed: int = 0, fraction: float = 0.25) -> Image.Image:
    """Grey out a random rectangle covering `fraction` of the area.

    Args:
        image: the clean image.
        seed: seeds the rectangle's position.
        fraction: the fraction of the area greyed, 0..1 (default 0.25; 0 = none). The
            rectangle has the image's aspect ratio.
    """
    out = _to_rgb(image).copy()
    if fraction > 0:
        box = _random_box(np.random.default_rng(seed), out.size, fraction)
        out.paste(_MASK_GREY, box)
    return out


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Param:
    """One parameter of a distortion: its type, range and short label.

    The default is read from the distortion function's signature, so it is
    written once.
    """

    name: str
    type: type[int] | type[float]
    low: float
    high: float | None = None
    symbol: str | None = None  # short label in preview grids ("t" for the step)
    default: ParamValue = 0

    def check(self, kind: str, value: Any) -> ParamValue:
        """`value` as this parameter's type, or ConfigError if it is wrong or out of range."""
        integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if self.type is int and not integral:
            raise ConfigError(f"{kind}: {self.name} must be an integer, got {value!r}")
        if not integral and not (isinstance(value, numbers.Real) and not isinstance(value, bool)):
            raise ConfigError(f"{kind}: {self.name} must be a number, got {value!r}")
        number = self.type(value)
        if (
            not math.isfinite(number)
            or number < self.low
            or (self.high is not None and number > self.high)
        ):
            raise ConfigError(f"{kind}: {self.name}={value!r} is out of range {self.range_text()}")
        return number

    def parse(self, kind: str, text: str) -> ParamValue:
        """Parse a command-line value, then `check` it."""
        try:
            value: ParamValue = int(text) if self.type is int else float(text)
        except ValueError:
            kind_name = "an integer" if self.type is int else "a number"
            raise ConfigError(f"{kind}: {self.name} must be {kind_name}, got {text!r}") from None
        return self.check(kind, value)

    def range_text(self) -> str:
        return f"[{self.low:g}, {self.high:g}]" if self.high is not None else f">= {self.low:g}"


@dataclass(frozen=True)
class Distortion:
    """A registered distortion: its function, parameters and preview sweep.

    Calling it validates the parameters and applies the function:
    ``DISTORTIONS["diffusion"](image, seed=0, step=500)``.

    Attributes:
        name: the registry name.
        function: ``function(image, *, seed, **params) -> Image``.
        params: the parameters with their ranges (defaults come from the signature).
        random: whether the seed changes the result.
        preview: parameter overrides shown side by side by `preview_grid`.
    """

    name: str
    function: Callable[..., Image.Image]
    params: tuple[Param, ...]
    random: bool
    preview: tuple[dict[str, ParamValue], ...] = field(default=())

    def __post_init__(self) -> None:
        signature = inspect.signature(self.function).parameters
        resolved = tuple(replace(p, default=signature[p.name].default) for p in self.params)
        object.__setattr__(self, "params", resolved)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param:
        for candidate in self.params:
            if candidate.name == name:
                return candidate
        raise ConfigError(
            f"{self.name} has no parameter {name!r}; valid: {', '.join(self.param_names)}"
        )

    def resolve(self, params: Mapping[str, Any]) -> dict[str, ParamValue]:
        """All parameters with defaults filled in, checked; ConfigError on a bad one."""
        for name in params:
            self.param(name)
        return {p.name: p.check(self.name, params.get(p.name, p.default)) for p in self.params}

    def __call__(self, image: Image.Image, *, seed: int = 0, **params: Any) -> Image.Image:
        return self.function(image, seed=_check_seed(seed), **self.resolve(params))


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _sweep(name: str, values: Iterable[ParamValue]) -> tuple[dict[str, ParamValue], ...]:
    return tuple({name: value} for value in values)


DISTORTIONS: dict[str, Distortion] = {
    d.name: d
    for d in (
        Distortion(
            "diffusion",
            diffusion,
            (Param("step", int, 0, DIFFUSION_STEPS - 1, symbol="t"),),
            random=True,
            preview=_sweep("step", (0, 100, 300, 500, 700, 900, 999)),
        ),
        Distortion(
            "blur",
            blur,
            (Param("radius", float, 0.0),),
            random=False,
            preview=_sweep("radius", (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)),
        ),
        Distortion(
            "downsample",
            downsample,
            (Param("factor", float, 1.0),),
            random=False,
            preview=_sweep("factor", (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)),
        ),
        Distortion(
            "jitter",
            jitter,
            (
                Param("brightness", float, 0.0, symbol="b"),
                Param("contrast", float, 0.0, symbol="c"),
                Param("saturation", float, 0.0, symbol="s"),
                Param("hue", float, 0.0, 0.5, symbol="h"),
            ),
            random=True,
            preview=tuple(
                {"brightness": a, "contrast": a, "saturation": a, "hue": h}
                for a, h in ((0.0, 0.0), (0.2, 0.05), (0.4, 0.1), (0.8, 0.25), (1.0, 0.5))
            ),
        ),
        Distortion(
            "crop",
            crop,
            (Param("scale", float, 0.01, 1.0),),
            random=True,
            preview=_sweep("scale", (1.0, 0.75, 0.5, 0.25, 0.1)),
        ),
        Distortion(
            "mask",
            mask,
            (Param("fraction", float, 0.0, 1.0),),
            random=True,
            preview=_sweep("fraction", (0.0, 0.1, 0.25, 0.5, 0.75)),
        ),
    )
}


def get_distortion(kind: str) -> Distortion:
    """The registered distortion `kind`, or ConfigError listing the valid names."""
    try:
        return DISTORTIONS[kind]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown distortion {kind!r}; valid: {', '.join(DISTORTIONS)}") from None


def distort(
    image: Image.Image, kind: str = "diffusion", *, seed: int = 0, **params: Any
) -> Image.Image:
    """Apply the distortion `kind` to `image` and return a new RGB image of the same size.

    Args:
        image: the clean image (any mode; converted to RGB).
        kind: a name in `DISTORTIONS`: diffusion, blur, downsample, jitter, crop, mask.
        seed: a non-negative integer; same inputs and seed give identical bytes.
        **params: the distortion's parameters (see each function); missing ones
            take their defaults.

    Raises:
        ConfigError: an unknown kind or parameter (the message lists the valid
            ones), a value of the wrong type or out of range, or a bad seed.
    """
    return get_distortion(kind)(image, seed=seed, **params)


def resolve_params(kind: str, params: Mapping[str, Any] | None = None) -> dict[str, ParamValue]:
    """Every parameter of `kind`, the given ones checked and the rest at their defaults."""
    return get_distortion(kind).resolve(params or {})


def describe(kind: str, params: Mapping[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """The provenance of a distortion, as a negative's ``params`` carries it.

    Returns:
        ``{"kind": kind, "params": {every parameter, defaults included}, "seed": seed}``.
    """
    return {"kind": kind, "params": resolve_params(kind, params), "seed": _check_seed(seed)}


def parse_params(kind: str, assignments: Iterable[str]) -> dict[str, ParamValue]:
    """Parse command-line ``NAME=VALUE`` strings into checked parameters of `kind`."""
    distortion = get_distortion(kind)
    params: dict[str, ParamValue] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"expected NAME=VALUE, got {assignment!r}")
        name = name.strip()
        if name in params:
            raise ConfigError(f"{kind}: parameter {name!r} given twice")
        params[name] = distortion.param(name).parse(kind, text.strip())
    return params


def output_tag(kind: str, params: Mapping[str, Any] | None = None, seed: int = 0) -> str:
    """A filename-safe tag naming the distortion, e.g. ``diffusion-step500-seed0``.

    The seed appears only for distortions it affects.
    """
    distortion = get_distortion(kind)
    parts = [kind, *(f"{name}{value:g}" for name, value in resolve_params(kind, params).items())]
    if distortion.random:
        parts.append(f"seed{_check_seed(seed)}")
    return "-".join(parts)


# --------------------------------------------------------------------------- preview

# Each cell is 336 px wide: the input side of LLaVA-1.5's CLIP ViT-L/14-336, so the
# grid shows about as much of the noise as the model's processor keeps.
_PREVIEW_WIDTH = 336


def _label(distortion: Distortion, overrides: Mapping[str, ParamValue]) -> str:
    return " ".join(
        f"{distortion.param(name).symbol or name}={value:g}" for name, value in overrides.items()
    )


def preview_grid(
    image: Image.Image,
    kind: str = "diffusion",
    *,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    sweep: Sequence[Mapping[str, ParamValue]] | None = None,
    width: int = _PREVIEW_WIDTH,
) -> Image.Image:
    """One row of `image` distorted at several settings, each labelled above.

    Args:
        image: the clean image.
        kind: the distortion.
        seed: the seed of every cell.
        params: base parameters; each cell overrides some of them.
        sweep: the per-cell overrides (default: the distortion's own sweep, e.g.
            t = 0, 100, 300, 500, 700, 900, 999 for diffusion).
        width: the width of each cell in pixels.

    Returns:
        An RGB image, white background, one labelled cell per setting.
    """
    distortion = get_distortion(kind)
    cells = list(sweep if sweep is not None else distortion.preview)
    if not cells:
        raise ConfigError(f"{kind}: nothing to preview")
    rgb = _to_rgb(image)
    height = max(1, round(rgb.height * width / rgb.width))
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=20)
    except (ImportError, OSError):  # Pillow built without FreeType: the small bitmap font
        font = ImageFont.load_default()
    label_height, margin = 32, 8
    grid = Image.new(
        "RGB",
        (len(cells) * (width + margin) + margin, height + label_height + margin),
        "white",
    )
    draw = ImageDraw.Draw(grid)
    for column, overrides in enumerate(cells):
        distorted = distortion(rgb, seed=seed, **{**(params or {}), **overrides})
        left = margin + column * (width + margin)
        grid.paste(
            distorted.resize((width, height), Image.Resampling.BICUBIC), (left, label_height)
        )
        draw.text((left, 6), _label(distortion, overrides), fill="black", font=font)
    return grid
