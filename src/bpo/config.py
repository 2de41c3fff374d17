"""Recipes: dataclass configs whose fields carry their help, read from YAML with dotted overrides.

A recipe is one YAML file with a section per concern (``model``, ``data``,
``lora``, ``train``); every key is a field of a dataclass below, with its
default and its help text next to it (the habit of TRL's config classes). The
same keys can be set on the command line as dotted overrides::

    bpo train --config recipes/tiny.yaml train.learning_rate=1e-5 lora.r=8

Unknown keys and values of the wrong type are refused loudly, naming the key and
the file (or the override) they came from, with the closest valid key when one
is near. Whatever the file holds (bytes that are not UTF-8, YAML that is not a
mapping, Python tags, anchors that expand to millions of values or contain
themselves), the outcome is a recipe or a `ConfigError`. The resolved recipe is
saved next to a run's outputs (`save_recipe`), so the run can be reproduced or
resumed from it.

Sections only hold settings; the stages read them (`bpo.train` reads all four).
Later stages add their own sections to `Recipe` the same way.
"""

from __future__ import annotations

import difflib
import os
import reprlib
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from bpo.errors import ConfigError
from bpo.fsio import write_text

# Every loss name TRL 1.16's DPOTrainer knows (trl/trainer/dpo_config.py, `loss_type`), plus
# "rpo", bpo's name for DPO + an SFT term on the chosen response (expanded by `loss_types`).
TRL_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip
LOSS_TYPES = (*TRL_LOSS_TYPES, "rpo")

# Bounds on a recipe's values once YAML anchors are expanded: a real recipe has a
# few hundred values, 4 levels deep. Past these, a "billion laughs" file (anchors of
# anchors, 9 aliases a level, expand to 9**n values) or an alias that contains
# itself would blow up in `save_recipe` or in an error message's repr.
MAX_VALUES = 10_000
MAX_DEPTH = 32
# How much of a wrong value an error message shows.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxstring = 3, 6, 6, 80


def doc(help: str, *, choices: Sequence[Any] | None = None, result: bool = True) -> dict[str, Any]:
    """A config field's metadata: its help text and, optionally, the values it may take.

    ``result=False`` marks a setting that cannot change what a stage produces
    (batch sizes of passes whose results do not depend on them, logging and
    saving frequency, devices and worker counts, where files go): a resumed run
    may change it (`result_settings`).
    """
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if not result:
        metadata["result"] = False
    return metadata


# --- sections ------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """The model to train: any vision-language model `AutoModelForImageTextToText` loads."""

    name: str = field(
        default="", metadata=doc("Hub id or local folder of the model (and its processor).")
    )
    revision: str | None = field(
        default=None, metadata=doc("Hub revision (branch, tag or commit) of the model.")
    )
    dtype: str = field(
        default="auto",
        metadata=doc(
            "dtype the weights are loaded in; auto keeps the checkpoint's own.",
            choices=("auto", "float32", "bfloat16", "float16"),
        ),
    )
    attn_implementation: str | None = field(
        default=None,
        metadata=doc(
            "Attention kernel (sdpa, flash_attention_2, eager); None: transformers' default."
        ),
    )
    trust_remote_code: bool = field(
        default=False,
        metadata=doc("Run code shipped with the checkpoint (only for models you trust)."),
    )
    allow_pickle: bool = field(
        default=False,
        metadata=doc(
            "Load pickle-based weights (pytorch_model.bin) when a checkpoint has no "
            "safetensors; unpickling can run code, so only for checkpoints you trust."
        ),
    )
    processor_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata=doc(
            "Arguments of AutoProcessor.from_pretrained, e.g. {max_pixels: 1003520} to cap "
            "Qwen2-VL's visual tokens per image."
        ),
    )


@dataclass
class DataConfig:
    """The preference pairs and how they become token sequences."""

    pairs: str = field(
        default="", metadata=doc("The pairs: a pairs JSONL file or its TRL export folder.")
    )
    image_root: str | None = field(
        default=None,
        metadata=doc("Folder the pairs' image paths are relative to (pairs JSONL only)."),
    )
    max_length: int | None = field(
        default=2048,
        metadata=doc(
            "Most tokens in prompt + response (the release's model_max_length is 2048). Responses "
            "are cut to fit; image tokens never are. None: no limit."
        ),
    )
    min_response_tokens: int = field(
        default=8,
        metadata=doc(
            "A pair whose prompt leaves fewer tokens than this for the responses is dropped "
            "(and counted) rather than cut to a stub."
        ),
    )
    on_error: str = field(default="raise", metadata=doc("On a bad pair or image: stop (raise) or count it and go on (skip).", choices=("raise", "skip"), result=False))  # fmt: skip
    cache_dir: str | None = field(
        default=None,
        metadata=doc(
            "Where the tokenized pairs and reference log-probs are cached, keyed by a hash of what "
            "they depend on. None: <train.output_dir>/cache.",
            result=False,
        ),
    )
    num_proc: int | None = field(
        default=None, metadata=doc("Processes that tokenize the pairs (None: one).", result=False)
    )


@dataclass
class LoraConfig:
    """LoRA (PEFT) on the language model; the vision tower stays frozen."""

    enabled: bool = field(
        default=True, metadata=doc("Train a LoRA adapter; false: full fine-tuning of the LM.")
    )
    r: int = field(default=32, metadata=doc("LoRA rank (BPO release: 32)."))
    alpha: int = field(default=256, metadata=doc("LoRA alpha (BPO release: 256)."))
    dropout: float = field(
        default=0.05, metadata=doc("Dropout on the LoRA input (BPO release: 0.05).")
    )
    target_modules: list[str] | None = field(
        default=None,
        metadata=doc(
            "Names of the language model's linear layers to adapt (e.g. [q_proj, v_proj]); "
            "None: every linear layer of the language model."
        ),
    )
    train_projector: bool = field(
        default=False,
        metadata=doc(
            "Also train the vision-language projector in full (LLaVA's multi_modal_projector)."
        ),
    )
    projector_modules: list[str] | None = field(
        default=None,
        metadata=doc(
            "Names of the projector modules; None: found by name (multi_modal_projector, ...)."
        ),
    )


@dataclass
class TrainConfig:
    """DPO training: TRL's DPOTrainer settings and where the run goes."""

    output_dir: str = field(
        default="runs/bpo",
        metadata=doc("The run folder: checkpoints, adapter, metrics, config.", result=False),
    )
    loss_type: list[str] = field(
        default_factory=lambda: ["sigmoid"],
        metadata=doc(
            "DPO loss, or a list of losses summed with loss_weights: sigmoid (DPO), ipo, hinge, "
            "rpo (DPO + rpo_alpha x NLL of the chosen response), or any other TRL loss type.",
            choices=LOSS_TYPES,
        ),
    )
    loss_weights: list[float] | None = field(
        default=None, metadata=doc("Weights of the losses in loss_type (default: 1 each).")
    )
    rpo_alpha: float = field(
        default=1.0,
        metadata=doc("Weight of the NLL term of the rpo loss (Pang et al. 2024 use 1.0)."),
    )
    beta: float = field(
        default=0.1,
        metadata=doc("DPO beta: strength of the pull toward the reference (release: 0.1)."),
    )
    learning_rate: float = field(
        default=2e-6, metadata=doc("Peak learning rate (BPO release: 2e-6).")
    )
    lr_scheduler_type: str = field(
        default="cosine", metadata=doc("Learning-rate schedule (transformers' names).")
    )
    warmup_ratio: float = field(
        default=0.03, metadata=doc("Fraction of the steps spent warming up (release: 0.03).")
    )
    weight_decay: float = field(default=0.0, metadata=doc("AdamW weight decay."))
    max_grad_norm: float = field(default=1.0, metadata=doc("Gradient clipping norm."))
    num_train_epochs: float = field(
        default=2.0, metadata=doc("Epochs over the pairs (BPO release: 2).")
    )
    max_steps: int = field(
        default=-1, metadata=doc("Stop after this many optimizer steps (-1: num_train_epochs).")
    )
    per_device_train_batch_size: int = field(
        default=4, metadata=doc("Pairs per device per step (release: 4).")
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata=doc("Micro-batches per optimizer step.")
    )
    gradient_checkpointing: bool = field(
        default=True,
        metadata=doc(
            "Recompute activations in the backward pass: less memory, ~1/3 more compute.",
            result=False,
        ),
    )
    bf16: bool | None = field(
        default=None,
        metadata=doc(
            "bfloat16 mixed precision; None: on where the device supports it (not on CPU)."
        ),
    )
    fp16: bool = field(
        default=False, metadata=doc("float16 mixed precision (GPUs without bfloat16).")
    )
    use_cpu: bool = field(
        default=False, metadata=doc("Train on the CPU even when a GPU is present.")
    )
    seed: int = field(
        default=42, metadata=doc("Seed of the LoRA init, the data order and dropout.")
    )
    precompute_reference: bool = field(
        default=True,
        metadata=doc(
            "Compute the reference log-probs once before training and cache them, so training "
            "skips the reference forward pass."
        ),
    )
    share_prompt: bool = field(
        default=True,
        metadata=doc(
            "Run each pair's prompt (its image tokens included) once for both responses, in one "
            "packed sequence, instead of twice as TRL does: same loss and gradients, fewer tokens. "
            "Models it does not support (it knows LLaVA and Qwen2-VL with sdpa or eager "
            "attention) fall back to TRL's layout."
        ),
    )
    reference_batch_size: int | None = field(
        default=None,
        metadata=doc(
            "Batch size of the reference pass (default: 2x per_device_train_batch_size).",
            result=False,
        ),
    )
    disable_dropout: bool = field(
        default=False,
        metadata=doc(
            "Zero every dropout in the model (TRL's default). Off here so lora.dropout applies, as in "
            "the release; LLaVA and Qwen2-VL have no other dropout."
        ),
    )
    dataloader_num_workers: int = field(
        default=0,
        metadata=doc(
            "Processes that decode and preprocess images while the model trains.", result=False
        ),
    )
    logging_steps: int = field(
        default=10, metadata=doc("Log (and append to metrics.jsonl) every N steps.", result=False)
    )
    save_steps: int = field(
        default=500, metadata=doc("Save a checkpoint every N steps.", result=False)
    )
    save_total_limit: int | None = field(
        default=2, metadata=doc("Checkpoints kept (oldest deleted); None: all.", result=False)
    )
    report_to: list[str] = field(
        default_factory=list,
        metadata=doc(
            "Trackers the training logs go to, by transformers' names: tensorboard (event files "
            "in <output_dir>/tensorboard; bpo points TENSORBOARD_LOGGING_DIR there), wandb "
            "(pip install 'bpo[wandb]'; WANDB_MODE, WANDB_PROJECT and WANDB_DIR apply), or any "
            "other transformers knows (mlflow, trackio ...); all: every one installed; [] or "
            "none: no tracking (metrics.jsonl is always written).",
            result=False,
        ),
    )
    trl: dict[str, Any] = field(
        default_factory=dict,
        metadata=doc("Any other trl.DPOConfig argument, passed as is (e.g. {ld_alpha: 0.5})."),
    )


@dataclass
class SamplesConfig:
    """`bpo run`: the supervised samples whose gold answers are the chosen responses."""

    path: str = field(
        default="", metadata=doc("Samples file (LLaVA JSON, ShareGPT4V, BPO, JSONL).")
    )
    format: str = field(
        default="auto",
        metadata=doc("The file's format.", choices=("auto", "llava", "sharegpt4v", "bpo", "jsonl")),
    )
    image_root: str | None = field(
        default=None, metadata=doc("Folder the samples' image paths are relative to.")
    )
    on_error: str = field(
        default="raise",
        metadata=doc(
            "A bad record: stop (raise) or count it and go on (skip).",
            choices=("raise", "skip"),
            result=False,
        ),
    )


@dataclass
class BootstrapConfig:
    """`bpo run`: how rejected responses are bootstrapped (see `bpo bootstrap --help`)."""

    strategies: list[str] = field(
        default_factory=lambda: ["image-weakening", "cooccurrence"],
        metadata=doc(
            "Strategies to run, each into negatives/<name>.jsonl.",
            choices=("image-weakening", "llm-injection", "cooccurrence"),
        ),
    )
    num_negatives: int = field(default=1, metadata=doc("Negatives per sample and strategy."))
    seed: int = field(default=0, metadata=doc("Seed of the noise and the sampling."))
    batch_size: int = field(default=16, metadata=doc("Samples per generation batch.", result=False))
    backend: str = field(
        default="hf", metadata=doc("Generation backend.", choices=("hf", "openai", "vllm"))
    )
    base_url: str | None = field(default=None, metadata=doc("openai backend: the server URL."))
    device: str = field(default="cpu", metadata=doc("hf backend: device.", result=False))
    distortion: str = field(default="diffusion", metadata=doc("Image weakening (bpo distort)."))
    distortion_params: dict[str, Any] = field(
        default_factory=lambda: {"step": 500},
        metadata=doc("Its parameters, e.g. {step: 500} of 1000 diffusion steps."),
    )
    temperature: float = field(default=1.0, metadata=doc("Sampling temperature."))
    top_p: float = field(default=1.0, metadata=doc("Nucleus sampling."))
    max_new_tokens: int = field(default=256, metadata=doc("Longest negative, in tokens."))
    injection_model: str | None = field(
        default=None, metadata=doc("llm-injection: the text LLM (default: model.name).")
    )
    style: str = field(
        default="instruction",
        metadata=doc("llm-injection prompt style.", choices=("instruction", "few-shot")),
    )
    lexicon: str | None = field(
        default=None, metadata=doc("cooccurrence: a lexicon file extending COCO's objects.")
    )


@dataclass
class PairsConfig:
    """`bpo run`: how negatives become pairs (see `bpo pairs --help`)."""

    max_words: int = field(default=350, metadata=doc("Longest response in words (release: 350)."))
    max_similarity: float = field(
        default=1.0, metadata=doc("Drop pairs more similar than this (1.0: only identical).")
    )
    require_absent_object: bool = field(
        default=False,
        metadata=doc("Keep only rejected responses naming an object absent from the chosen."),
    )
    mix: dict[str, float] = field(
        default_factory=dict, metadata=doc("Per-strategy ratios, e.g. {image-weakening: 1}.")
    )
    seed: int = field(default=0, metadata=doc("Seed of the mixing subsample."))


@dataclass
class EvalConfig:
    """`bpo run`: benchmarks run on the model before and after training."""

    chair: str | None = field(
        default=None, metadata=doc("CHAIR records (image, objects or meta.objects).")
    )
    pope: str | None = field(default=None, metadata=doc("A POPE question file or folder."))
    image_root: str | None = field(
        default=None, metadata=doc("Folder of the benchmarks' images (default: samples').")
    )
    max_new_tokens: int | None = field(
        default=None, metadata=doc("Answer length (default: each benchmark's).")
    )
    batch_size: int = field(default=16, metadata=doc("Items per generation batch.", result=False))


@dataclass
class Recipe:
    """A whole recipe: one section per concern.

    `bpo train` reads model, data, lora and train; `bpo run` adds samples,
    bootstrap, pairs and eval, and fills data.pairs itself.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def loss_types(self) -> tuple[list[str], list[float]]:
        """The TRL loss types and weights: ``rpo`` becomes ``sigmoid`` + ``sft`` weighted rpo_alpha.

        RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization") adds the
        length-normalised NLL of the chosen response to the DPO loss; TRL 1.16's
        ``sft`` loss is that term, so the pair of losses is RPO.
        """
        weights = self.train.loss_weights or [1.0] * len(self.train.loss_type)
        types_: list[str] = []
        expanded: list[float] = []
        for name, weight in zip(self.train.loss_type, weights, strict=True):
            if name == "rpo":
                types_ += ["sigmoid", "sft"]
                expanded += [weight, weight * self.train.rpo_alpha]
            else:
                types_.append(name)
                expanded.append(weight)
        return types_, expanded


# --- loading -------------------------------------------------------------------------------


def load_recipe(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> Recipe:
    """Read a YAML recipe (or the defaults when `path` is None) and apply dotted overrides.

    Args:
        path: the recipe file.
        overrides: ``section.key=value`` strings; values are parsed as YAML (``8``,
            ``1e-5``, ``true``, ``[q_proj, v_proj]``, ``null``).

    Raises:
        ConfigError: for a missing or malformed file, an unknown key or a wrong type,
            naming the key and where it came from.
    """
    import yaml

    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except OSError as error:
            raise ConfigError(f"cannot read recipe {path}: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {error.start}); is it a recipe?"
            ) from None
        try:
            loaded = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, RecursionError) as error:
            # ValueError: an integer of more than 4300 digits (Python's limit);
            # RecursionError: brackets nested past Python's recursion limit.
            reason = "nested too deeply" if isinstance(error, RecursionError) else error
            raise ConfigError(f"{path}: not valid YAML: {_first_line(reason)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of sections")
        check_size(loaded, source=source)
        data = loaded
    recipe = from_dict(Recipe, data, source=source)
    origins: dict[str, str] = {}
    for override in overrides:
        apply_override(recipe, override)
        origins[override.partition("=")[0].strip()] = f"override {override!r}"
    check_recipe(recipe, source=source, origins=origins)
    return recipe


def apply_override(config: Any, override: str) -> None:
    """Set one ``dotted.key=value`` on a config dataclass, checking the key and the type."""
    import yaml

    source = f"override {override!r}"
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{source}: expected key=value, e.g. train.learning_rate=1e-5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # not YAML: the text itself
        value = raw
    check_size(value, source=source)
    parts = key.split(".")
    target = config
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        if isinstance(target, dict):  # a free-form mapping such as train.trl
            if depth == len(parts) - 1:
                target[part] = value
                return
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{source}: {prefix}.{part} is not a mapping")
            continue
        known = {f.name: f for f in fields(target)}
        if part not in known:
            raise ConfigError(_unknown_key(source, prefix, part, list(known)))
        if depth == len(parts) - 1:
            hints = get_type_hints(type(target))
            setattr(target, part, _coerce(value, hints[part], key, source, known[part]))
            return
        target = getattr(target, part)
        if not (is_dataclass(target) or isinstance(target, dict)):
            raise ConfigError(f"{source}: {prefix + '.' if prefix else ''}{part} is not a section")


def check_size(
    value: Any, *, source: str, max_values: int = MAX_VALUES, max_depth: int = MAX_DEPTH
) -> None:
    """Refuse a value with more than `max_values` values or `max_depth` levels, aliases expanded.

    Raises:
        ConfigError: naming `source`. A value that contains itself (``&a [*a]``)
            is refused too: it is infinitely deep.
    """
    budget = max_values
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(
                f"{source}: more than {max_values} values once YAML anchors are expanded "
                "(an alias bomb?)"
            )
        if depth > max_depth:
            raise ConfigError(
                f"{source}: nested more than {max_depth} levels deep "
                "(or an anchor that contains itself)"
            )
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for pair in node.items() for child in pair)
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


def from_dict(cls: type[Any], data: Any, *, source: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        where = prefix or "the recipe"
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(_unknown_key(source, prefix, str(key), list(known)))
    hints = get_type_hints(cls)
    values = {}
    for name, value in data.items():
        dotted = f"{prefix}.{name}" if prefix else name
        values[name] = _coerce(value, hints[name], dotted, source, known[name])
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str, source: str, spec: Any = None) -> Any:
    """`value` as type `hint`, or a ConfigError naming `key` and `source`."""
    coerced = _convert(value, hint, key, source)
    choices = spec.metadata.get("choices") if spec is not None else None
    if choices:
        for item in coerced if isinstance(coerced, list) else [coerced]:
            if item is not None and item not in choices:
                raise ConfigError(
                    f"{source}: {key}: {item!r} is not one of {', '.join(map(str, choices))}"
                )
    return coerced


def _convert(value: Any, hint: Any, key: str, source: str) -> Any:
    if hint is Any:
        return value
    if is_dataclass(hint) and isinstance(hint, type):
        return from_dict(hint, value, source=source, prefix=key)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except ConfigError:
                continue
        raise _type_error(value, hint, key, source)
    if origin is Literal:
        if value in get_args(hint):
            return value
        raise _type_error(value, hint, key, source)
    if origin is list:
        (item,) = get_args(hint) or (Any,)
        if not isinstance(value, list):  # a lone value stands for a list of one
            value = [value]
        return [_convert(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _type_error(value, hint, key, source)
        _, item = get_args(hint) or (str, Any)
        return {k: _convert(v, item, f"{key}.{k}", source) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-5 (no dot) as a string: YAML 1.1
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str and isinstance(value, str):
        return value
    raise _type_error(value, hint, key, source)


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(hint))
    if origin is list:
        return f"a list of {_type_name(get_args(hint)[0])}"
    if origin is dict:
        item = get_args(hint)[1] if get_args(hint) else Any
        return "a mapping" if item is Any else f"a mapping to {_type_name(item)}"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, get_args(hint)))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _type_error(value: Any, hint: Any, key: str, source: str) -> ConfigError:
    return ConfigError(
        f"{source}: {key}: expected {_type_name(hint)}, "
        f"got {_SHORT.repr(value)} ({type(value).__name__})"
    )


def _first_line(error: Exception | str) -> str:
    """The start of an error's message (PyYAML's run to many lines)."""
    lines = str(error).strip().splitlines()
    return " ".join(line.strip() for line in lines[:3]) if lines else "parse error"


def _unknown_key(source: str, prefix: str, key: str, valid: list[str]) -> str:
    dotted = f"{prefix}.{key}" if prefix else key
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {(prefix + '.' if prefix else '') + close[0]!r}?" if close else ""
    where = f"in {prefix!r}" if prefix else "at the top level"
    return f"{source}: unknown key {dotted!r}{hint} (valid {where}: {', '.join(valid)})"


def check_recipe(
    recipe: Recipe, *, source: str = "recipe", origins: Mapping[str, str] | None = None
) -> None:
    """Range checks, and checks that span several keys (types are checked on loading).

    Args:
        recipe: the recipe.
        source: where its values came from (the YAML file), for error messages.
        origins: dotted key -> where that key was set instead (an override),
            so an error names the override rather than the file.

    Raises:
        ConfigError: naming the key, its value and where it was set.
    """
    origins = origins or {}

    def refuse(key: str, message: str) -> ConfigError:
        return ConfigError(f"{origins.get(key, source)}: {key} {message}")

    train, data, lora, boot = recipe.train, recipe.data, recipe.lora, recipe.bootstrap
    if train.loss_weights is not None and len(train.loss_weights) != len(train.loss_type):
        raise refuse(
            "train.loss_weights",
            f"has {len(train.loss_weights)} weights for {len(train.loss_type)} loss types",
        )
    positive: dict[str, float | None] = {
        "train.learning_rate": train.learning_rate,
        "train.beta": train.beta,
        "train.num_train_epochs": train.num_train_epochs,
        "train.max_grad_norm": train.max_grad_norm,
        "train.per_device_train_batch_size": train.per_device_train_batch_size,
        "train.gradient_accumulation_steps": train.gradient_accumulation_steps,
        "train.logging_steps": train.logging_steps,
        "train.save_steps": train.save_steps,
        "train.reference_batch_size": train.reference_batch_size,
        "train.save_total_limit": train.save_total_limit,
        "lora.r": lora.r,
        "lora.alpha": lora.alpha,
        "data.max_length": data.max_length,
        "data.min_response_tokens": data.min_response_tokens,
        "data.num_proc": data.num_proc,
        "bootstrap.num_negatives": boot.num_negatives,
        "bootstrap.batch_size": boot.batch_size,
        "bootstrap.max_new_tokens": boot.max_new_tokens,
        "pairs.max_words": recipe.pairs.max_words,
        "eval.batch_size": recipe.eval.batch_size,
        "eval.max_new_tokens": recipe.eval.max_new_tokens,
    }
    for key, value in positive.items():
        if value is not None and value <= 0:
            raise refuse(key, f"must be positive, got {value}")
    in_range: dict[str, tuple[float, float, float, bool]] = {
        # key: (value, low, high, high included)
        "lora.dropout": (lora.dropout, 0, 1, False),
        "train.warmup_ratio": (train.warmup_ratio, 0, 1, True),
        "train.weight_decay": (train.weight_decay, 0, float("inf"), True),
        "train.rpo_alpha": (train.rpo_alpha, 0, float("inf"), True),
        "bootstrap.temperature": (boot.temperature, 0, float("inf"), True),
        "bootstrap.top_p": (boot.top_p, 0, 1, True),
        "pairs.max_similarity": (recipe.pairs.max_similarity, 0, 1, True),
    }
    for key, (value, low, high, closed) in in_range.items():
        if not (low <= value and (value <= high if closed else value < high)):
            bound = "]" if closed else ")"
            raise refuse(key, f"must be in [{low:g}, {high:g}{bound}, got {value}")
    if boot.top_p == 0:
        raise refuse("bootstrap.top_p", "must be above 0, got 0.0")
    if train.max_steps == 0 or train.max_steps < -1:
        raise refuse(
            "train.max_steps",
            f"must be -1 (use num_train_epochs) or positive, got {train.max_steps}",
        )
    for name, ratio in recipe.pairs.mix.items():
        if ratio < 0:
            raise refuse("pairs.mix", f"ratio of {name!r} must be >= 0, got {ratio}")
    if train.bf16 and train.fp16:
        raise refuse("train.fp16", "and train.bf16 cannot both be true")
    check_report_to(train.report_to, source=origins.get("train.report_to", source))


def result_settings(recipe: Recipe, sections: Sequence[str] | None = None) -> dict[str, Any]:
    """The recipe's settings that shape a stage's result, flat (``"train.beta": 0.1``).

    Fields marked ``result=False`` (see `doc`) are left out, so a resumed run may
    change them. Free-form mappings (``train.trl``, ``model.processor_kwargs``)
    are one value each: a key added inside one is a change of that setting.

    Args:
        recipe: the recipe.
        sections: the sections to include (default: all).
    """
    settings: dict[str, Any] = {}
    for section in fields(recipe):
        if sections is not None and section.name not in sections:
            continue
        config = getattr(recipe, section.name)
        for spec in fields(config):
            if spec.metadata.get("result", True):
                value = getattr(config, spec.name)
                settings[f"{section.name}.{spec.name}"] = value
    return settings


# Trackers whose pip package is not named after transformers' name for them; bpo's own
# extras where it has one. The others install as `pip install <name>`.
_TRACKER_PACKAGES = {
    "wandb": "'bpo[wandb]'",
    "tensorboard": "tensorboardX",
    "azure_ml": "azureml-core",
    "comet_ml": "comet-ml",
    "flyte": "flytekit",
}
# transformers' availability check of a tracker, where it is not is_<name>_available.
_AVAILABILITY_CHECKS = {
    "azure_ml": "is_azureml_available",
    "comet_ml": "is_comet_available",
    "flyte": "is_flytekit_available",
}


def check_report_to(
    report_to: Sequence[str], *, source: str = "recipe", installed: bool = False
) -> None:
    """Refuse `train.report_to` names that transformers does not know, in one line.

    The valid names are those of transformers' tracker registry
    (`transformers.integrations.integration_utils.INTEGRATION_TO_CALLBACK`), plus
    ``none`` and ``all``, which stand alone. An empty list (the default) returns at
    once, importing nothing, so loading a recipe stays fast.

    Args:
        report_to: the tracker names.
        source: where the recipe came from, for the message.
        installed: also refuse a tracker whose package is not installed, naming the
            pip command (`bpo.train.runner.dpo_config` asks this before any model loads;
            loading a recipe does not, so a run trained with wandb can still be
            exported where wandb is not installed).

    Raises:
        ConfigError: naming the bad value and the valid ones, or the missing package.
    """
    if not report_to:
        return
    from transformers.integrations import integration_utils

    known = list(integration_utils.INTEGRATION_TO_CALLBACK)
    valid = ["none", "all", *known]
    for name in report_to:
        if name not in valid:
            close = difflib.get_close_matches(name.lower(), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{source}: train.report_to: {name!r} is not a tracker{hint} "
                f"(valid: {', '.join(valid)})"
            )
    if len(report_to) > 1 and {"none", "all"} & set(report_to):
        raise ConfigError(
            f"{source}: train.report_to: none and all stand alone, got {list(report_to)}"
        )
    if not installed:
        return
    for name in report_to:
        check = getattr(
            integration_utils, _AVAILABILITY_CHECKS.get(name, f"is_{name}_available"), None
        )
        # None: none/all, or a transformers that renamed the check; its callback then
        # raises its own error when the trainer is built.
        if check is not None and not check():
            package = _TRACKER_PACKAGES.get(name, name)
            raise ConfigError(
                f"{source}: train.report_to: {name} is not installed; "
                f"pip install {package} (or remove it from train.report_to)"
            )


# --- saving and describing -----------------------------------------------------------------


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data (what `save_recipe` writes)."""
    return asdict(recipe)


def recipe_to_yaml(recipe: Recipe) -> str:
    import yaml

    return str(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None))


def save_recipe(recipe: Recipe, path: str | os.PathLike[str]) -> Path:
    """Write the resolved recipe as YAML, atomically."""
    return write_text(path, recipe_to_yaml(recipe))


def describe(cls: type[Any] = Recipe, prefix: str = "") -> Iterator[tuple[str, str, Any, str]]:
    """Every key of `cls`: (dotted key, type, default, help), sections first to last."""
    hints = get_type_hints(cls)
    for spec in fields(cls):
        key = f"{prefix}.{spec.name}" if prefix else spec.name
        hint = hints[spec.name]
        if is_dataclass(hint) and isinstance(hint, type):
            yield from describe(hint, key)
            continue
        if spec.default is not MISSING:
            default = spec.default
        elif spec.default_factory is not MISSING:
            default = spec.default_factory()
        else:
            default = None
        help_text = spec.metadata.get("help", "")
        if not spec.metadata.get("result", True):
            help_text += " (Cannot change a result: may differ when a run is resumed.)"
        yield key, _type_name(hint), default, help_text


def describe_text(cls: type[Any] = Recipe) -> str:
    """The keys of `cls` as text, one block per key (for ``--help-config``)."""
    lines = []
    for key, type_name, default, help_text in describe(cls):
        lines.append(f"{key} ({type_name}, default: {default!r})\n    {help_text}")
    return "\n".join(lines)
