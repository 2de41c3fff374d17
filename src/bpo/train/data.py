"""The pairs as token sequences for DPO: read, checked, tokenized once and cached.

TRL's `DataCollatorForVisionPreference` renders the chat template and tokenizes
every pair at every step, twice (once for the chosen, once for the rejected
sequence). Here the template and the tokenizer run once per pair, before training
(`tokenize_pairs`); the collator (`bpo.train.collator.PreferenceCollator`, also
importable from here) pads the stored ids and has the processor make the image and
per-token inputs once per pair and step. The ids are those TRL's collator builds,
token for token (the same `trl.data_utils.apply_chat_template`, the same processor
call for the prompt), except where TRL's are wrong: responses are tokenized by the
tokenizer, since Mllama's processor starts any text with BOS (see `response_ids`);
PaliGemma, a prefix LM without a chat template, takes its documented format
(`bpo.processing`): the prompt as the processor's prefix, each response as its suffix.

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

from bpo import processing
from bpo.config import Recipe
from bpo.errors import ConfigError, ErrorPolicy
from bpo.fsio import atomic_dir, write_text
from bpo.provenance import file_digest

# Re-exported: callers import the collator and these names from here.
from bpo.train.collator import REFERENCE_COLUMNS as REFERENCE_COLUMNS
from bpo.train.collator import WEAKENED_REFERENCE_COLUMN as WEAKENED_REFERENCE_COLUMN
from bpo.train.collator import PreferenceCollator as PreferenceCollator
from bpo.train.collator import example_images as example_images

# Bump when the tokenization below changes, so older caches are not reused.
# 2: the rendered prompt is stored (the collator has the processor make the image and
# per-token inputs from it); PaliGemma's responses are its processor's suffix.
TOKENIZATION_VERSION = 2
# Bump when the TRL export of a pairs file gains or changes a column, so a cached export of
# the same file is made again. 2: the pairs' ``weakening`` column.
EXPORT_VERSION = 2
# The columns of a tokenized pair the collator reads (BpoDPOTrainer keeps them).
SEQUENCE_COLUMNS = ("prompt_text", "prompt_ids", "chosen_ids", "rejected_ids")
TOKEN_TYPE_KEYS = processing.TOKEN_TYPE_KEYS
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
    content = digest(file_digest(path), root_key, EXPORT_VERSION)
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


def render_texts(example: dict[str, Any], processor: Any) -> dict[str, str]:
    """Prompt, chosen and rejected as the processor takes them.

    Chat templates: rendered exactly as TRL's vision collator does (responses are what
    the template writes after the prompt, end-of-turn token included). PaliGemma: the
    prompt rendered as its prefix, each response its plain text (the processor's suffix).
    """
    from trl.data_utils import apply_chat_template, is_conversational, prepare_multimodal_messages

    texts = {key: example[key] for key in ("prompt", "chosen", "rejected")}
    conversational = is_conversational(example)
    if conversational:
        texts["prompt"] = prepare_multimodal_messages(example["prompt"], example_images(example))
        texts["chosen"] = prepare_multimodal_messages(example["chosen"])
        texts["rejected"] = prepare_multimodal_messages(example["rejected"])
    if processing.is_prefix_lm(processor):
        if conversational:
            texts["prompt"] = processor.apply_chat_template(
                texts["prompt"],
                add_generation_prompt=True,
                chat_template=processing.chat_template(processor),
            )
        return {
            "prompt": texts["prompt"],
            "chosen": processing.message_text(texts["chosen"]),
            "rejected": processing.message_text(texts["rejected"]),
        }
    if conversational:
        texts = apply_chat_template(
            texts, processor, chat_template=processing.chat_template(processor)
        )
    return texts


def response_ids(processor: Any, text: str) -> list[int]:
    """The token ids of a response rendered by `render_texts`, by the processor's tokenizer.

    Not ``processor(text=...)`` as in TRL: a processor lays out its text as a whole prompt,
    and Mllama's adds BOS to any text without one (processing_mllama.py,
    ``build_string_from_input``), which put a BOS inside every response. No special
    tokens are added (the template wrote them). PaliGemma's response is its suffix: the
    text and EOS, tokenized apart from the prefix (processing_paligemma.py passes
    ``suffix + eos_token`` as the pair's second text).
    """
    tokenizer = processor.tokenizer
    if processing.is_prefix_lm(processor):
        text += tokenizer.eos_token
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize_example(
    example: dict[str, Any], processor: Any, max_length: int | None, min_response_tokens: int
) -> dict[str, Any]:
    """Token ids of one pair, with the responses cut to fit `max_length` (`Dataset.map` function)."""
    texts = render_texts(example, processor)
    images = example_images(example)
    # TRL's DataCollatorForVisionPreference's call for the prompt with its images, never
    # adding special tokens (the chat template holds them); each response alone.
    prompt = processor(
        images=[images] if images else None, text=[texts["prompt"]], add_special_tokens=False
    )
    chosen = response_ids(processor, texts["chosen"])
    rejected = response_ids(processor, texts["rejected"])
    prompt_ids = list(prompt["input_ids"][0])
    status = STATUS_KEPT
    if max_length is not None:
        room = max_length - len(prompt_ids)
        if room < min_response_tokens:
            status = STATUS_DROPPED
        elif max(len(chosen), len(rejected)) > room:
            chosen, rejected, status = chosen[:room], rejected[:room], STATUS_TRUNCATED
    return {
        "prompt_text": texts["prompt"],
        "prompt_ids": prompt_ids,
        "chosen_ids": chosen,
        "rejected_ids": rejected,
        "status": status,
    }


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
