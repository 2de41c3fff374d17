"""`train(recipe)`: a DPO run from a recipe, resumable, under one process or `accelerate launch`.

Order matters for clear failures: the recipe and the pairs are checked, and the
pairs tokenized (every image opened), before any model loads; an empty dataset,
a missing image or a bad key stops the run in seconds with one message.

A run folder (``train.output_dir``) holds::

    config.yaml          the resolved recipe
    checkpoints/         checkpoint-<step>/ (adapter or weights, optimizer, scheduler, RNG)
    adapter/ | model/    the final LoRA adapter (or full weights) with the processor
    metrics.jsonl        one line per logging step (see `MetricsLogger`)
    train_result.json    steps, runtime, data counts, reference cache, weight digests
    reference_margins.json  with train.select: hardest, the pairs kept and the margins
    cache/               tokenized pairs and reference log-probs (unless data.cache_dir)

Killed at any point (``kill -9`` included), a run continues with ``--resume`` to
the weights an uninterrupted run ends with: it resumes the newest checkpoint
saved to the end (`last_checkpoint`; transformers writes checkpoints in place),
the final weights and every JSON file are renamed into place once whole
(`bpo.fsio`), and the caches mark their completion last (``tests/crash``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bpo.config import Recipe, save_recipe
from bpo.console import say
from bpo.errors import ConfigError, ErrorPolicy
from bpo.fsio import atomic_dir, write_text
from bpo.train.run_folder import (
    CHECKPOINTS,
    CONFIG_NAME,
    METRICS_NAME,
    RESULT_NAME,
    check_run_dir,
    discard_incomplete_checkpoints,
    last_checkpoint,
)

# Keys of trl.DPOConfig that bpo sets from its own recipe keys (train.trl may not repeat them).
_OWNED_BY_RECIPE = {
    "output_dir": "train.output_dir",
    "max_length": "data.max_length",
    "precompute_ref_log_probs": "train.precompute_reference",
    "precompute_ref_batch_size": "train.reference_batch_size",
}


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        run_dir: the run folder.
        output: the final adapter (LoRA) or model (full fine-tuning) folder.
        global_step: optimizer steps done, resumed ones included.
        resumed_from: the checkpoint the run resumed from, if any.
        data: the counts of `bpo.train.data.PreparedPairs`.
        reference: the reference cache folder and the seconds it took (0 when reused).
        weights_digests: one hash of the trainable weights per process.
        metrics: the trainer's end-of-training summary (runtime, mean loss ...).
        selection: with ``train.select: hardest``, the pairs kept of how many
            (`bpo.train.selection.Selection.counts`); None trains on every pair.
    """

    run_dir: Path
    output: Path
    global_step: int
    resumed_from: str | None
    data: dict[str, Any]
    reference: dict[str, Any] | None
    weights_digests: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] | None = None

    def summary(self) -> str:
        """The end-of-run table (`bpo.train.progress.summary_table`)."""
        from bpo.train.progress import summary_table

        return summary_table(
            self.run_dir,
            global_step=self.global_step,
            seconds=float(self.metrics.get("train_runtime", 0.0)),
            output=self.output,
            resumed_from=self.resumed_from,
            more=[("pairs", _selection_row(self.selection))] if self.selection else [],
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["run_dir"], data["output"] = str(self.run_dir), str(self.output)
        data["ranks_agree"] = len(set(self.weights_digests)) <= 1
        if self.selection is None:  # train.select: all writes the file it always wrote
            del data["selection"]
        return data


def _selection_row(selection: dict[str, Any]) -> str:
    return (
        f"{selection['kept']} of {selection['pairs']} "
        f"({selection['select']}, k={selection['select_k']})"
    )


def _say(message: str) -> None:
    from accelerate import PartialState

    if PartialState().is_main_process:
        say(message)


def mixed_precision(recipe: Recipe) -> str:
    """``"bf16"``, ``"fp16"`` or ``"no"``: the recipe's, with ``train.bf16: null`` resolved."""
    train = recipe.train
    if train.fp16:
        return "fp16"
    if train.bf16 is None:
        on_gpu = torch.cuda.is_available() and not train.use_cpu
        return "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "no"
    return "bf16" if train.bf16 else "no"


def dpo_config(recipe: Recipe) -> Any:
    """The `trl.DPOConfig` of a recipe (checkpoints go to ``<output_dir>/checkpoints``).

    With ``tensorboard`` in ``train.report_to``, it sets ``TENSORBOARD_LOGGING_DIR``
    to ``<output_dir>/tensorboard``: transformers 5 has no ``logging_dir`` argument,
    and its `TensorBoardCallback` reads that variable when the trainer is built
    (without it, the events would land in ``<output_dir>/checkpoints/runs/<date>``).
    One folder for every launch of a run: a resumed run adds its event file beside the
    first, and TensorBoard shows one curve. The variable is set, not defaulted, so each
    run of a process (``bpo run`` rounds, tests) logs into its own folder.

    Raises:
        ConfigError: when ``train.trl`` names an unknown DPOConfig argument or one
            that a recipe key already sets, or ``train.report_to`` an unknown tracker
            or one whose package is not installed (before any model loads).
    """
    from trl import DPOConfig

    from bpo.config import check_report_to

    train = recipe.train
    check_report_to(train.report_to, installed=True)
    loss_types, loss_weights = recipe.loss_types()
    precision = mixed_precision(recipe)
    kwargs: dict[str, Any] = {
        "output_dir": str(Path(train.output_dir) / CHECKPOINTS),
        "learning_rate": train.learning_rate,
        "lr_scheduler_type": train.lr_scheduler_type,
        "warmup_steps": train.warmup_ratio,  # transformers 5: a float below 1 is a ratio
        "weight_decay": train.weight_decay,
        "max_grad_norm": train.max_grad_norm,
        "num_train_epochs": train.num_train_epochs,
        "max_steps": train.max_steps,
        "per_device_train_batch_size": train.per_device_train_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "activation_checkpointing": train.gradient_checkpointing,  # transformers 5 name
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "use_cpu": train.use_cpu,
        "seed": train.seed,
        "logging_steps": train.logging_steps,
        "save_strategy": "steps",
        "save_steps": train.save_steps,
        "save_total_limit": train.save_total_limit,
        "report_to": train.report_to or "none",
        # bpo.train.progress.ConsoleProgress is the run's one bar and its log lines.
        "disable_tqdm": True,
        "dataloader_num_workers": train.dataloader_num_workers,
        "disable_dropout": train.disable_dropout,
        "beta": train.beta,
        "loss_type": loss_types,
        "loss_weights": loss_weights,
        # The pairs are truncated when tokenized (bpo.train.data), never inside image tokens.
        "max_length": None,
        # TRL refuses this for vision datasets; bpo.train.reference does it instead.
        "precompute_ref_log_probs": False,
        "trust_remote_code": recipe.model.trust_remote_code,
    }
    valid = {spec.name for spec in dataclasses.fields(DPOConfig)}
    for key, value in train.trl.items():
        if key not in valid:
            raise ConfigError(f"train.trl.{key}: not an argument of trl.DPOConfig")
        if key in _OWNED_BY_RECIPE:
            raise ConfigError(f"train.trl.{key}: set it with {_OWNED_BY_RECIPE[key]} instead")
        if key in kwargs:
            raise ConfigError(f"train.trl.{key}: set it with train.{key} instead")
        kwargs[key] = value
    try:
        args = DPOConfig(**kwargs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"train: {error}") from None
    if "tensorboard" in (args.report_to or []):  # resolved to a list: "all" may include it
        os.environ["TENSORBOARD_LOGGING_DIR"] = os.path.abspath(
            Path(train.output_dir) / "tensorboard"
        )
    return args


def train(
    recipe: Recipe,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Run DPO as the recipe says; continue the last checkpoint with `resume`.

    Args:
        recipe: the resolved recipe.
        resume: continue from the run folder's last checkpoint (from scratch if none).
        overwrite: delete a previous run's outputs in the folder first (the cache stays).
        callbacks: extra `transformers.TrainerCallback` objects.

    Raises:
        ConfigError: for a recipe, a run folder or pairs that cannot be used.
        RecordError: for a bad pair or image (unless ``data.on_error`` is ``skip``).
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from transformers.trainer_callback import PrinterCallback
    from trl.trainer.utils import global_then_local_main_first

    from bpo.train.callbacks import MetricsLogger
    from bpo.train.data import PreferenceCollator, cache_dir, check_pairs_source, tokenize_pairs
    from bpo.train.distributed import check_deepspeed_precision, check_sharded_launch
    from bpo.train.image_conditional import ImageTerms, check_weakened
    from bpo.train.model import freeze_for_full_finetuning, load_model, load_processor, peft_config
    from bpo.train.progress import ConsoleProgress
    from bpo.train.reference import reference_fingerprint
    from bpo.train.shared_prompt import shared_prompt_refusal
    from bpo.train.trainer import BpoDPOTrainer

    if not recipe.model.name:
        raise ConfigError("model.name is not set: give a hub id or a local model folder")
    check_pairs_source(recipe)
    check_deepspeed_precision(mixed_precision(recipe))
    provenance = check_run_dir(recipe, resume=resume, overwrite=overwrite)
    run_dir = Path(recipe.train.output_dir)
    args = dpo_config(recipe)  # sets up the processes (accelerate state) before anything else
    check_sharded_launch()

    processor = load_processor(recipe.model)
    policy = ErrorPolicy(recipe.data.on_error)  # type: ignore[arg-type]
    with global_then_local_main_first():
        prepared = tokenize_pairs(recipe, processor, policy)
    _say(f"bpo train: {prepared.summary()}")
    image_terms = ImageTerms(
        conditional_weight=recipe.train.image_conditional_weight,
        anchor_weight=recipe.train.anchor_weight,
        anchor_delta=recipe.train.anchor_delta,
    )
    if image_terms.conditional_weight:
        _say(f"bpo train: {check_weakened(prepared.dataset, recipe)}")

    model = load_model(recipe.model)
    # train.reference_model: the reference is that model, not the policy with its adapter
    # disabled (TRL's `ref_model`; `bpo run`'s rounds.reference: base).
    ref_model = None
    if recipe.train.reference_model:
        ref_model = load_model(
            dataclasses.replace(recipe.model, name=recipe.train.reference_model, revision=None)
        )
    lora = peft_config(recipe, model)
    if lora is None:
        freeze_for_full_finetuning(model, recipe)
    reference_folder = None
    if recipe.train.precompute_reference:
        key = reference_fingerprint(
            recipe, prepared.fingerprint, mixed_precision=mixed_precision(recipe)
        )
        reference_folder = cache_dir(recipe) / f"reference-{key}"
    reused = reference_folder is not None and (reference_folder / "done.json").exists()
    tokenizer = processor.tokenizer
    refusal = shared_prompt_refusal(model) if recipe.train.share_prompt else None
    share_prompt = recipe.train.share_prompt and refusal is None
    if refusal is not None:
        _say(f"bpo train: each prompt runs twice (TRL's layout): {refusal}")
    # Everything that could refuse or fail before training has run: only now is the
    # folder written (and, with --overwrite, the old run removed).
    if args.process_index == 0:
        provenance.commit()
        save_recipe(recipe, run_dir / CONFIG_NAME)
        if policy.total:
            policy.report(run_dir / "skipped.json")
    PartialState().wait_for_everyone()
    trainer = BpoDPOTrainer(
        model=model,
        args=args,
        train_dataset=prepared.dataset,
        processing_class=processor,
        data_collator=PreferenceCollator(
            processor,
            tokenizer.pad_token_id,
            share_prompt,
            image_conditional=bool(image_terms.conditional_weight),
        ),
        peft_config=lora,
        ref_model=ref_model,
        callbacks=[MetricsLogger(run_dir / METRICS_NAME), ConsoleProgress(), *callbacks],
        reference_cache=reference_folder,
        reference_batch_size=recipe.train.reference_batch_size,
        image_terms=image_terms,
    )
    trainer.remove_callback(PrinterCallback)  # its raw dicts: ConsoleProgress prints lines
    reference = None
    if reference_folder is not None:
        reference = {
            "folder": str(reference_folder),
            "reused": reused,
            "seconds": trainer.reference_seconds,
        }

    selection = None
    if recipe.train.select == "hardest":
        selection = _select_hardest(trainer, recipe, run_dir)

    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and args.process_index == 0:
        for path in discard_incomplete_checkpoints(run_dir):
            _say(f"bpo train: {path.name} was not saved to the end (a killed run?); deleted it")
    trainer.accelerator.wait_for_everyone()
    if resume and checkpoint is None and (run_dir / CHECKPOINTS).exists():
        _say(f"bpo train: no complete checkpoint in {run_dir / CHECKPOINTS}; starting over")
    elif checkpoint is not None:
        _say(f"bpo train: resuming from {checkpoint}")
    output = trainer.train(resume_from_checkpoint=checkpoint)

    final = run_dir / ("adapter" if lora is not None else "model")
    save_final(trainer, final)
    digests = gather_object([trainer.weights_digest()])
    result = TrainResult(
        run_dir=run_dir,
        output=final,
        global_step=trainer.state.global_step,
        resumed_from=checkpoint,
        data=prepared.counts,
        reference=reference,
        weights_digests=list(digests),
        metrics=dict(output.metrics),
        selection=selection,
    )
    if len(set(digests)) > 1 and not trainer.is_deepspeed_enabled:
        _say("bpo train: warning: the processes finished with different weights")
    if args.process_index == 0:
        write_text(run_dir / RESULT_NAME, json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _select_hardest(trainer: Any, recipe: Recipe, run_dir: Path) -> dict[str, Any]:
    """Train on the hardest pairs of each sample only (`bpo.train.selection`), after the
    reference pass; the main process writes the margins to the run folder."""
    from bpo.train.selection import select_hardest, write_margins

    selection = select_hardest(trainer.train_dataset, recipe.train.select_k)
    trainer.train_dataset = trainer.train_dataset.select(selection.rows)
    if trainer.accelerator.is_main_process:
        write_margins(selection, run_dir)
    _say(f"bpo train: {selection.summary()}")
    return selection.counts()


def save_final(trainer: Any, final: Path) -> None:
    """`trainer.save_model` into a staging folder that replaces `final` once complete.

    Every process calls it (DeepSpeed ZeRO-3 and FSDP gather the weights from all of
    them); the main process owns the staging folder (`bpo.fsio.atomic_dir`) and tells
    the others its name, so a run killed while saving leaves `final` as it was. Under
    FSDP the weights are gathered whole whatever ``fsdp_state_dict_type`` says (with
    ``SHARDED_STATE_DICT``, `save_model` writes none), so `final` always loads with
    `from_pretrained` and `bpo export` reads it.
    """
    from accelerate.utils import broadcast_object_list

    main = trainer.accelerator.is_main_process
    with atomic_dir(final) if main else contextlib.nullcontext(None) as staging:
        name = broadcast_object_list([str(staging) if main else None])[0]
        if trainer.is_fsdp_enabled:
            trainer._save(name, state_dict=trainer.accelerator.get_state_dict(trainer.model))
        else:
            trainer.save_model(name)
        trainer.accelerator.wait_for_everyone()  # every shard written before the rename
    trainer.accelerator.wait_for_everyone()
