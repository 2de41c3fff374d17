"""`BpoDPOTrainer`: TRL's DPOTrainer on pre-tokenized vision pairs with a cached reference.

What it changes in `trl.DPOTrainer`, and nothing else (the loss, the metrics,
the LoRA reference with the adapter disabled, checkpoints: all TRL's):

- the rows are the pre-tokenized pairs of `bpo.train.data` (their columns are
  kept by `_set_signature_columns_if_needed`), batched by `PreferenceCollator`;
- with a reference cache folder, the reference log-probs are computed once and
  read from the batch at each step (TRL's own ``precompute_ref_logps`` code path,
  which it refuses to enable for vision datasets): the trainer picks the model and
  runs the batches, `bpo.train.reference` keeps the resumable cache; with full
  fine-tuning, TRL's reference copy is freed afterwards;
- with `bpo.train.shared_prompt`'s packed batches, the model is called through
  `SharedPromptForward` (each prompt once for both responses, for every family
  `supports_shared_prompt` accepts), which hands TRL its usual per-token outputs;
- with `bpo.train.image_conditional`'s terms, the loss adds mDPO's image-conditional term
  (one more forward pass per step: the gold answers on the weakened images) and anchor;
- `weights_digest` hashes the trainable weights, to check that processes agree;
- TRL's count of the tokens trained on (``num_tokens`` in the logs) is saved with
  each checkpoint and restored on resume (TRL restarts it from 0 in each `train`
  call, so a resumed run logged smaller counts than an uninterrupted one);
- a run resumed from a checkpoint saved at ``max_steps`` (killed after its last
  checkpoint) trains no further (see `get_batch_samples`);
- under FSDP, the transformer-layer auto wrap gets the layers the model holds
  (`bpo.train.distributed.prepare_fsdp_plugin`); under DeepSpeed, the reference pass's
  inference engine is freed before training.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import DPOTrainer

from bpo.errors import BpoError
from bpo.fsio import write_text
from bpo.train.collator import IS_WEAKENED, WEAKENED
from bpo.train.data import (
    REFERENCE_COLUMNS,
    SEQUENCE_COLUMNS,
    TOKEN_TYPE_KEYS,
    WEAKENED_REFERENCE_COLUMN,
)
from bpo.train.distributed import GatherTrainedOutputLayer, prepare_fsdp_plugin
from bpo.train.image_conditional import ImageTerms, image_conditional_losses, summed_logps
from bpo.train.reference import compute_reference_logps
from bpo.train.shared_prompt import SharedPromptForward

# Saved in each checkpoint folder, before transformers' trainer_state.json (which marks a
# complete checkpoint, see bpo.train.runner.is_complete_checkpoint).
TOKEN_COUNT_NAME = "bpo_token_count.json"


class _Recorded:
    """The model TRL calls in its loss, keeping the last outputs (the policy's log-probs of
    the chosen answers, with their graph, for the image-conditional terms)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.outputs: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.outputs = self.model(*args, **kwargs)
        return self.outputs


class BpoDPOTrainer(DPOTrainer):
    """`trl.DPOTrainer` for `bpo.train.data`'s tokenized pairs, with cached reference log-probs.

    Args:
        *args: `trl.DPOTrainer`'s arguments.
        reference_cache: the folder of the cached reference log-probs; None
            computes them at each step (TRL's default).
        reference_batch_size: pairs per forward pass of the reference pass.
        image_terms: mDPO's image-conditional term and anchor
            (`bpo.train.image_conditional`); None: none (the paper's BPO loss).
        **kwargs: `trl.DPOTrainer`'s keyword arguments.
    """

    def __init__(
        self,
        *args: Any,
        reference_cache: str | os.PathLike[str] | None = None,
        reference_batch_size: int | None = None,
        image_terms: ImageTerms | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.image_terms = image_terms or ImageTerms()
        prepare_fsdp_plugin(self.accelerator, self.model)
        if self.is_fsdp_enabled:
            self.add_callback(GatherTrainedOutputLayer())
        self.reference_cache = reference_cache
        self.reference_seconds = 0.0
        if reference_cache is not None:
            started = time.perf_counter()
            batch_size = reference_batch_size or 2 * self.args.per_device_train_batch_size
            self.train_dataset = self._reference_pass(reference_cache, batch_size)
            self.precompute_ref_logps = True
            self.reference_seconds = time.perf_counter() - started
            if self.ref_model is not None:  # full fine-tuning: the copy is no longer needed
                self.ref_model = None
                gc.collect()

    def base_model(self) -> Any:
        """The transformers model under the accelerate and PEFT wrappers."""
        from accelerate.utils import is_peft_model

        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if is_peft_model(model) else model

    def forward_for(self, model: Any, inputs: dict[str, Any]) -> Any:
        """`model`, or its shared-prompt stand-in when the batch is packed."""
        if "packed_input_ids" in inputs:
            return SharedPromptForward(model, self.base_model())
        return model

    def _reference_pass_model(self) -> Any:
        """The model that computes the cached reference log-probs, before `train`.

        TRL's reference copy (full fine-tuning), else the policy, whose adapter TRL's
        `compute_ref_log_probs` disables. Under DeepSpeed, before `train`, the weights are
        not yet placed (ZeRO-1/2) or gathered (ZeRO-3): they run in an inference engine,
        built once, as TRL's own precompute does.
        """
        if self.ref_model is not None:
            return self.ref_model
        if not self.is_deepspeed_enabled:
            return self.model
        if self._precompute_engine is None:
            from trl.models import prepare_deepspeed

            policy: Any = self.model
            self._precompute_engine = prepare_deepspeed(policy, self.accelerator)
        return self._precompute_engine

    def _reference_pass(self, folder: str | os.PathLike[str], batch_size: int) -> Any:
        """The training rows with their reference log-probs, from `folder` or computed there."""
        import torch

        model = self._reference_pass_model()

        columns = list(REFERENCE_COLUMNS)
        if self.image_terms.conditional_weight:
            columns.append(WEAKENED_REFERENCE_COLUMN)

        def batch_logps(rows: list[dict[str, Any]]) -> list[list[float]]:
            batch = self._prepare_inputs(self.data_collator(rows))
            weakened: Any = batch.pop(WEAKENED, None)
            with torch.no_grad():
                values = list(self.reference_logps(batch, model))
                if self.image_terms.conditional_weight:
                    values.append(self.weakened_reference_logps(weakened, model))
            return [value.tolist() for value in values]

        was_training = model.training
        model.eval()
        try:
            return compute_reference_logps(
                self.train_dataset,
                folder,
                batch_size,
                accelerator=self.accelerator,
                batch_logps=batch_logps,
                columns=columns,
            )
        finally:
            model.train(was_training)
            if self._precompute_engine is not None:
                # ZeRO-3: the inference engine's hooks on the policy's modules would stay and
                # trip the training engine's own ("pop from an empty deque" at step 1).
                self._precompute_engine.destroy()
                self._precompute_engine = None

    def reference_logps(self, inputs: dict[str, Any], model: Any = None) -> tuple[Any, Any]:
        """TRL's reference log-probs of a batch (either layout): chosen, rejected.

        Args:
            inputs: a collated batch, on the device.
            model: the model to call (default: the reference model, else the policy,
                whose adapter TRL disables).
        """
        if model is None:
            model = self.ref_model if self.ref_model is not None else self.model
        chosen, rejected = self.compute_ref_log_probs(self.forward_for(model, inputs), inputs)
        return chosen, rejected

    def weakened_reference_logps(self, weakened: dict[str, Any], model: Any = None) -> Any:
        """The reference log-probs of the chosen answers on the weakened images, one per pair.

        TRL's `compute_ref_log_probs` (its reference model or disabled adapter) on the
        weakened batch (TRL's layout, one sequence per pair); it splits its result into two
        halves, put back together here.
        """
        import torch

        if model is None:
            model = self.ref_model if self.ref_model is not None else self.model
        inputs = {key: value for key, value in weakened.items() if key != IS_WEAKENED}
        return torch.cat(self.compute_ref_log_probs(model, inputs))

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        inputs = dict(inputs)
        weakened = inputs.pop(WEAKENED, None)
        ref_weakened = inputs.pop(WEAKENED_REFERENCE_COLUMN, None)
        forward = self.forward_for(model, inputs)
        terms = self.image_terms
        if forward is model and not terms.active:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # TRL's own reference pass calls the model with TRL's layout, and keeps its results to
        # itself; run ours first and let TRL read them from the batch, as when precomputed.
        computes_reference = not self.precompute_ref_logps
        if computes_reference:
            chosen, rejected = self.reference_logps(inputs)
            inputs = {**inputs, REFERENCE_COLUMNS[0]: chosen, REFERENCE_COLUMNS[1]: rejected}
            self.precompute_ref_logps = True
        recorded = _Recorded(forward)
        try:
            result = super().compute_loss(recorded, inputs, return_outputs, num_items_in_batch)
        finally:
            if computes_reference:
                self.precompute_ref_logps = False
        if not terms.active:
            return result
        chosen_logps = summed_logps(recorded.outputs.log_probs, inputs["completion_mask"])
        chosen_logps = chosen_logps.chunk(2, dim=0)[0]
        extra = self._image_terms_loss(model, inputs, weakened, ref_weakened, chosen_logps)
        if return_outputs:
            return result[0] + extra, result[1]
        return result + extra

    def _image_terms_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        weakened: dict[str, Any] | None,
        ref_weakened: Any,
        chosen_logps: Any,
    ) -> Any:
        """The image-conditional and anchor terms of a batch (`bpo.train.image_conditional`),
        weighted and averaged over its pairs, with their metrics logged."""
        terms = self.image_terms
        ref_chosen = inputs[REFERENCE_COLUMNS[0]]
        weakened_logps = ref_weakened_logps = chosen_logps.detach()
        is_weakened = chosen_logps.new_zeros(chosen_logps.shape)
        if terms.conditional_weight:
            if weakened is None:
                raise BpoError("the image-conditional term needs the collator's weakened batch")
            is_weakened = weakened[IS_WEAKENED].to(chosen_logps.dtype)
            if ref_weakened is None:
                ref_weakened = self.weakened_reference_logps(weakened)
            ref_weakened_logps = ref_weakened
            model_inputs = {key: value for key, value in weakened.items() if key != IS_WEAKENED}
            mask = model_inputs.pop("completion_mask")
            labels = model_inputs["input_ids"].masked_fill(mask == 0, -100)
            outputs = model(**model_inputs, labels=labels, fused_lm_head=True, use_cache=False)
            weakened_logps = summed_logps(outputs.log_probs, mask)
        conditional, anchor = image_conditional_losses(
            chosen_logps,
            ref_chosen,
            weakened_logps,
            ref_weakened_logps,
            is_weakened,
            beta=self.beta,
            delta=terms.anchor_delta,
        )
        mode = "train" if chosen_logps.requires_grad else "eval"
        gather = self.accelerator.gather_for_metrics
        if terms.conditional_weight:
            self._metrics[mode]["image_conditional/loss"].append(
                gather(conditional.detach()).mean().item()
            )
            margins = (
                self.beta
                * ((chosen_logps - ref_chosen) - (weakened_logps - ref_weakened_logps)).detach()
            )
            flags = gather(is_weakened)
            self._metrics[mode]["image_conditional/margins"].append(
                ((gather(margins) * flags).sum() / flags.sum().clamp(min=1)).item()
            )
        if terms.anchor_weight:
            self._metrics[mode]["anchor/loss"].append(gather(anchor.detach()).mean().item())
        return (terms.conditional_weight * conditional + terms.anchor_weight * anchor).mean()

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = [  # type: ignore[assignment]
                "images",
                "image",
                *SEQUENCE_COLUMNS,
                *(f"prompt_{key}" for key in TOKEN_TYPE_KEYS),
                *REFERENCE_COLUMNS,
                "weakening",
                WEAKENED_REFERENCE_COLUMN,
            ]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial))
            folder = folder / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            write_text(
                folder / TOKEN_COUNT_NAME, json.dumps({"num_tokens": self._total_train_tokens})
            )
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        saved = Path(checkpoint) / TOKEN_COUNT_NAME if checkpoint is not None else None
        if saved is not None and saved.exists():
            self._total_train_tokens = json.loads(saved.read_text(encoding="utf-8"))["num_tokens"]

    def get_batch_samples(
        self, epoch_iterator: Any, num_batches: int, device: Any
    ) -> tuple[list[Any], Any]:
        # transformers 5 checks max_steps after each optimizer step, never before the first:
        # resumed from a checkpoint at max_steps in the middle of an epoch, it trained one
        # step more (checkpoint-5 of a 4-step run). No batch then: the loop ends at once.
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return [], None
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    def weights_digest(self) -> str:
        """SHA-256 of the trainable weights (names and float32 values), on this process.

        Under FSDP every process takes part (each gathers the full weights from the shards).
        """
        from torch.distributed.tensor import DTensor

        sha = hashlib.sha256()
        model = self.accelerator.unwrap_model(self.model)
        for name, parameter in sorted(model.named_parameters(), key=lambda item: item[0]):
            if parameter.requires_grad:
                values = parameter.detach()
                if isinstance(values, DTensor):  # FSDP2: this process's shard; gather them all
                    values = values.full_tensor()
                sha.update(name.encode())
                sha.update(values.float().cpu().numpy().tobytes())
        return sha.hexdigest()
