"""Weaken images: forward diffusion noise (the paper's), blur, downsample, jitter, crop, mask.

INPUT is an image file, or a records file (.json/.jsonl: LLaVA, ShareGPT4V, BPO
release or bpo JSONL) whose images are read under --image-root. Each distorted
image is written as PNG into --out, named after the input file (or the record
id) plus the distortion, e.g. ``cat.diffusion-step500-seed0.png``; the manifest
``distortions.jsonl`` records source, output and provenance of each. Re-running
skips outputs already written. --preview adds ``preview-<kind>.png``: the first
image at several settings side by side (t = 0 ... 999 for diffusion).

Examples:
  bpo distort cat.jpg --kind diffusion --step 700 --out weak/ --preview
  bpo distort data.json --image-root coco/ --kind blur --param radius=8 --out weak/
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo.commands.options import add_image_root, add_on_error
from bpo.fsio import atomic_write

if TYPE_CHECKING:
    from PIL import Image

    from bpo.errors import ErrorPolicy

RECORD_SUFFIXES = (".json", ".jsonl")
MANIFEST = "distortions.jsonl"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="an image file or a records file")
    parser.add_argument(
        "--kind",
        default="diffusion",
        help="diffusion (default), blur, downsample, jitter, crop or mask",
    )
    parser.add_argument(
        "--step",
        type=int,
        default=None,
        help="diffusion step t in 0..999 (default 500); same as --param step=T",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random distortions")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of the distortion, e.g. radius=8 (repeatable)",
    )
    parser.add_argument("--out", required=True, help="folder for the PNGs and the manifest")
    parser.add_argument(
        "--preview",
        action="store_true",
        help="also write a grid of the first image at several settings",
    )
    parser.add_argument(
        "--format",
        default="auto",
        help="records format: auto, llava, sharegpt4v, bpo or jsonl",
    )
    add_image_root(parser)
    add_on_error(parser)


def safe_name(name: str, *, max_length: int = 80) -> str:
    """`name` as a portable file name; a short hash keeps altered names distinct."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"
    if cleaned == name and len(name) <= max_length:
        return name
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=4).hexdigest()
    return f"{cleaned[:max_length]}-{digest}"


def run(args: argparse.Namespace) -> int:
    from bpo.distort import DISTORTIONS, describe, get_distortion, output_tag, parse_params
    from bpo.errors import ConfigError, ErrorPolicy

    distortion = get_distortion(args.kind)
    params = parse_params(args.kind, args.param)
    if args.step is not None:
        if "step" in params:
            raise ConfigError("give the step once: --step or --param step=...")
        if "step" not in distortion.param_names:
            raise ConfigError(
                f"--step applies to diffusion; {args.kind} takes "
                f"--param {', '.join(distortion.param_names)} (kinds: {', '.join(DISTORTIONS)})"
            )
        params["step"] = distortion.param("step").check(args.kind, args.step)
    provenance = describe(args.kind, params, args.seed)
    tag = output_tag(args.kind, params, args.seed)

    source = Path(args.input)
    if not source.is_file():
        raise ConfigError(f"{source}: no such file")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    is_records = args.format != "auto" or source.suffix.lower() in RECORD_SUFFIXES
    policy = ErrorPolicy(args.on_error)
    job = _Job(args, out_dir, tag, provenance)
    try:
        if is_records:
            job.run_records(source, policy)
        else:
            job.run_image(source)
    finally:
        job.close()
    from bpo.console import say

    say(job.summary())
    if is_records:
        policy.report(out_dir / "skipped.json")
    return 0


class _Job:
    """Writes the distorted images, the manifest and the preview of one run."""

    def __init__(
        self, args: argparse.Namespace, out_dir: Path, tag: str, provenance: dict[str, Any]
    ) -> None:
        from bpo.data.jsonl import JsonlWriter

        self.args = args
        self.out_dir = out_dir
        self.tag = tag
        self.provenance = provenance
        self.manifest = JsonlWriter(out_dir / MANIFEST, resume=True)
        self.written = self.existing = self.without_image = 0
        self.preview_path: Path | None = None

    def run_image(self, source: Path) -> None:
        from bpo.data.images import load_image

        image = load_image(str(source), None)
        self.process(image, name=safe_name(source.stem), source=str(source), sample_id=None)

    def run_records(self, source: Path, policy: ErrorPolicy) -> None:
        from tqdm import tqdm

        from bpo.data.formats import read_samples
        from bpo.data.images import load_image
        from bpo.errors import RecordError

        samples = read_samples(source, format=self.args.format, policy=policy)
        for sample in tqdm(samples, desc="distort", unit="image", disable=None):
            if sample.image is None:
                self.without_image += 1
                continue
            name = safe_name(sample.id)
            if self.done(name) and not (self.args.preview and self.preview_path is None):
                self.existing += 1
                continue
            try:
                image = load_image(sample.image, self.args.image_root, record_id=sample.id)
            except RecordError as error:  # ImageError names the record and the image path
                policy.handle(error)
                continue
            self.process(image, name=name, source=sample.image, sample_id=sample.id)

    def output_name(self, name: str) -> str:
        return f"{name}.{self.tag}.png"

    def done(self, name: str) -> bool:
        output = self.output_name(name)
        return output in self.manifest and (self.out_dir / output).is_file()

    def process(self, image: Image.Image, *, name: str, source: str, sample_id: str | None) -> None:
        from bpo.distort import distort, preview_grid

        provenance = self.provenance
        if self.args.preview and self.preview_path is None:
            self.preview_path = self.out_dir / f"preview-{provenance['kind']}.png"
            grid = preview_grid(
                image, provenance["kind"], seed=provenance["seed"], params=provenance["params"]
            )
            _save_png(grid, self.preview_path)
            from bpo.console import say

            say(f"preview: {self.preview_path}")
        output = self.output_name(name)
        if self.done(name):
            self.existing += 1
            return
        distorted = distort(
            image, provenance["kind"], seed=provenance["seed"], **provenance["params"]
        )
        _save_png(distorted, self.out_dir / output)
        self.manifest.write(
            {
                "id": output,
                "sample_id": sample_id,
                "source": source,
                "output": output,
                "provenance": provenance,
            }
        )
        self.written += 1

    def summary(self) -> str:
        plural = "" if self.written == 1 else "s"
        parts = [f"wrote {self.written} image{plural} to {self.out_dir}"]
        if self.existing:
            parts.append(f"{self.existing} already there")
        if self.without_image:
            parts.append(f"{self.without_image} samples without an image")
        return "; ".join(parts)

    def close(self) -> None:
        self.manifest.close()


def _save_png(image: Image.Image, path: Path) -> None:
    """Write atomically, so an interrupted run never leaves half a PNG under the final name."""
    with atomic_write(path, "wb") as handle:
        image.save(handle, format="PNG")
