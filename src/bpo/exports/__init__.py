"""Exports of a pairs file to the formats trainers read, without conversion.

- ``trl``: a Hugging Face `datasets` dataset in TRL's conversational vision
  preference format (what `trl.DPOTrainer` and its `DataCollatorForVisionPreference`
  take): ``images`` (a list of one image, the `datasets.Image` feature),
  ``prompt`` (messages with content lists, an ``{"type": "image"}`` part opening
  the first user message), ``chosen`` and ``rejected`` (one assistant message
  each), plus ``id``, ``strategy`` and ``weakening`` (the pair's distortion as JSON
  text, or None). Saved with ``save_to_disk`` as
  ``<name>_trl/`` and as ``<name>_trl.parquet``.
- ``bpo``: the BPO release format (github.com/pipilurj/bootstrapped-preference-optimization-BPO,
  ``data_generation/README.md``): a JSON array of ``{"prompt", "image",
  "completions": [{"score", "response", "type"}]}``, one record per (image,
  prompt, gold answer) with the gold answer once (score 1, type ``"gt"``) and all
  its negatives (score 0, type ``"mllm-hal"`` for image-weakening, ``"llm-hal"``
  for llm-injection, else the strategy name). Saved as ``<name>_bpo.json``.
- ``llamafactory``: LLaMA-Factory's sharegpt preference format for images
  (``data/README.md`` in hiyouga/LLaMA-Factory): ``conversations`` (``from``
  human/gpt/system, ``<image>`` opening the first human turn), ``chosen`` and
  ``rejected`` (``{"from": "gpt", "value"}``), ``images`` (one path). Saved as
  ``<name>_llamafactory.json`` with its entry merged into ``dataset_info.json``.

Every export streams: the pairs file is read line by line, images one at a time
(`Dataset.from_generator`), and the BPO grouping holds byte offsets, not texts.
"""

from __future__ import annotations

import os

from bpo.errors import ConfigError, ErrorPolicy
from bpo.exports.bpo_release import (
    RELEASE_GOLD_TYPE,
    RELEASE_TYPES,
    export_bpo_release,
    release_prompt,
)
from bpo.exports.common import IMAGE_TOKEN, ExportResult, write_json_array
from bpo.exports.llamafactory import (
    check_llamafactory_export,
    export_llamafactory,
    llamafactory_dataset_info,
    llamafactory_record,
)
from bpo.exports.trl import export_trl, trl_features, trl_row

__all__ = [
    "EXPORT_FORMATS",
    "IMAGE_TOKEN",
    "RELEASE_GOLD_TYPE",
    "RELEASE_TYPES",
    "ExportResult",
    "check_llamafactory_export",
    "export_bpo_release",
    "export_llamafactory",
    "export_pairs",
    "export_trl",
    "llamafactory_dataset_info",
    "llamafactory_record",
    "release_prompt",
    "trl_features",
    "trl_row",
    "write_json_array",
]

EXPORT_FORMATS = ("trl", "bpo", "llamafactory")


def export_pairs(
    format: str,
    pairs_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
    policy: ErrorPolicy | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Export a pairs file in `format` (one of `EXPORT_FORMATS`).

    `name` prefixes the files (default: the pairs file's stem) and names the
    LLaMA-Factory dataset; `overwrite` is `export_llamafactory`'s (the other formats
    always replace their own files).

    Raises:
        ConfigError: for an unknown format, listing the valid ones.
    """
    if format == "trl":
        return export_trl(pairs_path, out_dir, name=name, image_root=image_root, policy=policy)
    if format == "bpo":
        return export_bpo_release(pairs_path, out_dir, name=name, policy=policy)
    if format == "llamafactory":
        return export_llamafactory(
            pairs_path,
            out_dir,
            name=name,
            image_root=image_root,
            policy=policy,
            overwrite=overwrite,
        )
    raise ConfigError(
        f"unknown export format {format!r}; valid formats: {', '.join(EXPORT_FORMATS)}"
    )
