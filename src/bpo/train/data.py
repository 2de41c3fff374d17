"""The pairs as token sequences for DPO: read, checked, tokenized once and cached; the collator.

TRL's `DataCollatorForVisionPreference` renders the chat template, tokenizes and
preprocesses every image at every step, and twice per pair (once for the
chosen, once for the rejected sequence). Here the template and the tokenizer
run once per pair, before training (`tokenize_pairs`), and the collator only
pads the stored ids and preprocesses each image once (`PreferenceCollator`).
The ids are those TRL's collator builds, token for token: the same
`trl.data_utils.apply_chat_template`, the same processor calls.

Truncation never cuts an image token: the prompt (which holds the image tokens)
is kept whole and the responses are cut to the room left under
``data.max_length``; a pair whose prompt leaves less than
``data.min_response_tokens`` is dropped and counted.

Caching: the pairs JSONL is exported once (`bpo.exports.export_trl`) to a
folder keyed by the file's content hash; the tokenized dataset is saved to a
folder keyed by a hash of the source, the processor and the truncation settings.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bpo.config import Recipe
from bpo.errors import ConfigError, ErrorPolicy
from bpo.fsio import atomic_dir, write_text
from bpo.provenance import file_digest

# Bump when the tokenization below changes, so older caches are not reused.
TOKENIZATION_VERSION = 1
SEQUENCE_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
# Per-token outputs of some processors (Gemma 3: token_type_ids; Qwen2.5-VL and others in
# transformers 5: mm_token_type_ids), kept for the prompt; responses get zeros, as in TRL.
TOKEN_TYPE_KEYS = ("token_type_ids", "mm_token_type_ids")
STATUS_KEPT, STATUS_TRUNCATED, STATUS_DROPPED = "kept", "truncated", "prompt-too-long"


@dataclass
class PreparedPairs:
    """The tokenized pairs and what happened on the way.

    Attributes:
        dataset: the training rows: the source columns plus the token ids.
        fingerprint: a hash of everything the ids depend on (keys the reference cache).
        path: the cache folder holding `dataset`.
        counts: pairs read, kept whole, truncated, dropped (by reason), skipped on export.
    """

    dataset: Any
    fingerprint: str
    path: Path
    counts: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        counts = self.counts
        text = f"{counts['rows']} pairs: {counts['kept']} kept whole"
        if counts["truncated"]:
            text += f", {counts['truncated']} truncated"
        dropped = counts.get("dropped", {})
        if dropped:
            text += ", dropped " + ", ".join(f"{n} ({why})" for why, n in sorted(dropped.items()))
        skipped = counts.get("skipped", {})
        if skipped:
            text += ", skipped " + ", ".join(f"{n} ({why})" for why, n in sorted(skipped.items()))
        return text


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def cache_dir(recipe: Recipe) -> Path:
    return Path(recipe.data.cache_dir or Path(recipe.train.output_dir) / "cache")


def check_pairs_source(recipe: Recipe) -> Path:
    """The pairs path of the recipe, checked to exist."""
    if not recipe.data.pairs:
        raise ConfigError("data.pairs is not set: give a pairs JSONL file or its TRL export")
    path = Path(recipe.data.pairs)
    if not path.exists():
        raise ConfigError(f"data.pairs: {path} does not exist")
    return path


def load_source(recipe: Recipe, policy: ErrorPolicy) -> tuple[Any, str, dict[str, int]]:
    """The pairs as a TRL conversational vision preference dataset.

    A pairs JSONL is exported with `bpo.exports.export_trl` (which checks every
    image) into the cache, once per file content; a folder is read with
    `datasets.load_from_disk`.

    Returns:
        The dataset, its fingerprint and the pairs skipped on export, by reason.
    """
    import datasets

    from bpo.exports import export_trl

    path = check_pairs_source(recipe)
    if path.is_dir():
        try:
            dataset = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as error:
            raise ConfigError(f"data.pairs: {path} is not a saved dataset ({error})") from None
        if isinstance(dataset, datasets.DatasetDict):
            if "train" not in dataset:
                raise ConfigError(f"data.pairs: {path} holds no 'train' split")
            dataset = dataset["train"]
        missing = {"prompt", "chosen", "rejected"} - set(dataset.column_names)
        if missing:
            raise ConfigError(
                f"data.pairs: {path} lacks the column(s) {', '.join(sorted(missing))} of TRL's "
                "preference format"
            )
        if len(dataset) == 0:
            raise ConfigError(f"data.pairs: {path} holds no pair")
        return dataset, dataset._fingerprint, {}

    image_root = recipe.data.image_root
    root_key = str(Path(image_root).resolve()) if image_root else None
    # Keyed by content (not by datasets' fingerprint, which depends on the cache folder), so
    # the tokens and reference log-probs keyed on it carry over between cache folders.
    content = digest(file_digest(path), root_key)
    folder = cache_dir(recipe) / f"pairs-{content}"
    target, summary = folder / "pairs_trl", folder / "export.json"
    if not (target.exists() and summary.exists()):
        result = export_trl(path, folder, name="pairs", image_root=image_root, policy=policy)
        (folder / "pairs_trl.parquet").unlink(missing_ok=True)  # training reads the Arrow copy
        skipped = dict(result.left_out)
        # Written after the export, atomically: its presence marks a complete export.
        write_text(summary, json.dumps({"pairs": result.pairs, "skipped": skipped}) + "\n")
    dataset = datasets.load_from_disk(str(target))
    skipped = json.loads(summary.read_text())["skipped"]
    if len(dataset) == 0:
        raise ConfigError(f"data.pairs: no usable pair in {path}")
    return dataset, content, skipped


def processor_fingerprint(processor: Any) -> str:
    """A hash of the processor (tokenizer, chat template, image settings)."""
    from datasets.fingerprint import Hasher

    return str(Hasher.hash(processor))


def example_images(example: dict[str, Any]) -> list[Any]:
    """The images of a row (``images``, a list, or ``image``, one), None entries left out."""
    if "images" in example:
        images = example["images"] or []
    else:
        images = [example["image"]] if example.get("image") is not None else []
    return [image for image in images if image is not None]


def render_texts(example: dict[str, Any], processor: Any) -> dict[str, str]:
    """Prompt, chosen and rejected as text, rendered exactly as TRL's vision collator does."""
    from trl.data_utils import apply_chat_template, is_conversational, prepare_multimodal_messages

    texts = {key: example[key] for key in ("prompt", "chosen", "rejected")}
    if is_conversational(example):
        texts["prompt"] = prepare_multimodal_messages(example["prompt"], example_images(example))
        texts["chosen"] = prepare_multimodal_messages(example["chosen"])
        texts["rejected"] = prepare_multimodal_messages(example["rejected"])
        texts = apply_chat_template(texts, processor)
    return texts


def tokenize_example(
    example: dict[str, Any], processor: Any, max_length: int | None, min_response_tokens: int
) -> dict[str, Any]:
    """Token ids of one pair, with the responses cut to fit `max_length` (`Dataset.map` function)."""
    texts = render_texts(example, processor)
    images = example_images(example)
    # The calls of TRL's DataCollatorForVisionPreference: the prompt with its images, each
    # response alone, never adding special tokens (the chat template holds them).
    prompt = processor(
        images=[images] if images else None, text=[texts["prompt"]], add_special_tokens=False
    )
    chosen = processor(text=[texts["chosen"]], add_special_tokens=False)["input_ids"][0]
    rejected = processor(text=[texts["rejected"]], add_special_tokens=False)["input_ids"][0]
    prompt_ids = list(prompt["input_ids"][0])
    status = STATUS_KEPT
    if max_length is not None:
        room = max_length - len(prompt_ids)
        if room < min_response_tokens:
            status = STATUS_DROPPED
        elif max(len(chosen), len(rejected)) > room:
            chosen, rejected, status = chosen[:room], rejected[:room], STATUS_TRUNCATED
    row: dict[str, Any] = {
        "prompt_ids": prompt_ids,
        "chosen_ids": list(chosen),
        "rejected_ids": list(rejected),
        "status": status,
    }
    for key in TOKEN_TYPE_KEYS:
        if key in prompt:
            row[f"prompt_{key}"] = list(prompt[key][0])
    return row


def tokenize_pairs(
    recipe: Recipe, processor: Any, policy: ErrorPolicy | None = None
) -> PreparedPairs:
    """Read, check and tokenize the recipe's pairs, or reuse the cached result.

    Run it in the main process first under several processes (the caller's
    ``main_process_first``): the others then read the cache.

    Raises:
        ConfigError: when the pairs are missing or none is left to train on.
        RecordError: for a bad pair or image, unless ``data.on_error`` is ``skip``.
    """
    import datasets

    policy = policy or ErrorPolicy(recipe.data.on_error)  # type: ignore[arg-type]
    source, source_fingerprint, skipped = load_source(recipe, policy)
    settings = {
        "version": TOKENIZATION_VERSION,
        "max_length": recipe.data.max_length,
        "min_response_tokens": recipe.data.min_response_tokens,
    }
    fingerprint = digest(source_fingerprint, processor_fingerprint(processor), settings)
    folder = cache_dir(recipe) / f"tokens-{fingerprint}"
    target, counts_file = folder / "dataset", folder / "counts.json"
    if not (target.exists() and counts_file.exists()):
        staging = folder / ".staging"  # scratch: hidden, as temporaries are
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        mapped = source.map(
            tokenize_example,
            fn_kwargs={
                "processor": processor,
                "max_length": recipe.data.max_length,
                "min_response_tokens": recipe.data.min_response_tokens,
            },
            num_proc=recipe.data.num_proc,
            cache_file_name=str(staging / "tokens.arrow"),
            desc="Tokenizing pairs",
        )
        statuses = Counter(mapped["status"])
        kept = mapped.filter(
            lambda status: status != STATUS_DROPPED,
            input_columns="status",
            cache_file_name=str(staging / "kept.arrow"),
        )
        with atomic_dir(target) as saving:
            kept.save_to_disk(str(saving))
        del mapped, kept
        shutil.rmtree(staging, ignore_errors=True)
        counts = {
            "rows": sum(statuses.values()),
            "kept": statuses[STATUS_KEPT],
            "truncated": statuses[STATUS_TRUNCATED],
            "dropped": {STATUS_DROPPED: statuses[STATUS_DROPPED]}
            if statuses[STATUS_DROPPED]
            else {},
        }
        write_text(counts_file, json.dumps(counts) + "\n")  # last: marks a complete cache
    dataset = datasets.load_from_disk(str(target))
    counts = json.loads(counts_file.read_text())
    counts["skipped"] = skipped
    if len(dataset) == 0:
        raise ConfigError(
            f"no pair left to train on in {recipe.data.pairs}: all {counts['rows']} prompts leave "
            f"fewer than data.min_response_tokens={recipe.data.min_response_tokens} tokens under "
            f"data.max_length={recipe.data.max_length}"
        )
    return PreparedPairs(dataset, fingerprint, folder, counts)


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=torch.long)


@dataclass
class PreferenceCollator:
    """Pads tokenized pairs into TRL's DPO batch: chosen sequences, then rejected ones.

    Returns what `trl.DPOTrainer` reads: ``input_ids``, ``attention_mask``,
    ``completion_mask``, the image inputs (``pixel_values``, ``image_grid_thw`` ...
    from the processor's image processor, computed once per pair and repeated for
    the rejected half), per-token type ids when the processor makes them, and the
    reference log-probs when the rows hold them. With `share_prompt`, it adds the
    packed layout of `bpo.train.shared_prompt` (``packed_*`` keys; images once per
    pair), which `BpoDPOTrainer` runs instead of TRL's layout.
    """

    processor: Any
    pad_token_id: int
    share_prompt: bool = False

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        from bpo.train.shared_prompt import pack_pairs, pack_token_types

        prompts = [list(example["prompt_ids"]) for example in examples]
        chosens = [list(example["chosen_ids"]) for example in examples]
        rejecteds = [list(example["rejected_ids"]) for example in examples]
        responses = chosens + rejecteds
        prompts2 = prompts + prompts
        sequences = [p + r for p, r in zip(prompts2, responses, strict=True)]
        batch: dict[str, torch.Tensor] = {
            "input_ids": _pad(sequences, self.pad_token_id),
            "attention_mask": _pad([[1] * len(s) for s in sequences], 0),
            "completion_mask": _pad(
                [[0] * len(p) + [1] * len(r) for p, r in zip(prompts2, responses, strict=True)], 0
            ),
        }
        if self.share_prompt:
            batch.update(
                pack_pairs(
                    prompts, chosens, rejecteds, self.pad_token_id, batch["input_ids"].size(1)
                )
            )
        for key in TOKEN_TYPE_KEYS:
            column = f"prompt_{key}"
            if column in examples[0]:
                types = [list(example[column]) for example in examples]
                if self.share_prompt:
                    total = batch["packed_input_ids"].size(1)
                    batch[f"packed_{key}"] = pack_token_types(types, batch["packed_lengths"], total)
                    continue
                types2 = types + types
                batch[key] = _pad(
                    [t + [0] * len(r) for t, r in zip(types2, responses, strict=True)], 0
                )
        images = [example_images(example) for example in examples]
        if any(images):
            # One image-processor call for the batch, as the processor makes it inside TRL's
            # collator. TRL's layout repeats the tensors for the rejected half (rows in the same
            # order); the shared-prompt layout holds each image once.
            features = self.processor.image_processor(
                images=[group for group in images if group], return_tensors="pt"
            )
            for key, value in features.items():
                if isinstance(value, torch.Tensor):
                    batch[key] = value if self.share_prompt else torch.cat([value, value])
        if REFERENCE_COLUMNS[0] in examples[0]:
            for key in REFERENCE_COLUMNS:
                batch[key] = torch.tensor([example[key] for example in examples])
        return batch
