"""What a sharded launch (FSDP, DeepSpeed ZeRO) needs from bpo beyond accelerate's own config.

- accelerate 1.15 runs FSDP on GPUs (and other accelerators) only: on CPU processes it
  drops the FSDP config and runs plain data parallelism (`accelerate.state.AcceleratorState`).
  `check_sharded_launch` turns that silent change into a refusal that says so, before
  anything loads. DeepSpeed does run on CPU.
- FSDP's transformer-layer auto wrap takes the model's ``_no_split_modules`` when the
  config names no layer class, and fails when one of them is not in the model: LLaVA
  inherits ``CLIPTextEmbeddings`` from CLIP, which its vision tower does not hold
  (transformers issue 37672 has another). `fsdp_layer_classes` keeps the ones present.
- A trained output layer (full fine-tuning) is gathered before each forward
  (`GatherTrainedOutputLayer`): otherwise TRL 1.16's fused LM head gathers it itself, and
  its gradient is not averaged over the processes. Measured on the tiny LLaVA, 2 FSDP
  processes against 1 process with the same global batch, without it: the ``lm_head``
  gradient norm 2.29 against 1.77 at step 1 (every other layer's within 0.1%); with it,
  the losses agree within 4e-7 and the weights within 1e-6.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import TrainerCallback

from bpo.errors import ConfigError


def requested_sharding() -> str | None:
    """``"FSDP"`` or ``"DeepSpeed"`` when `accelerate launch` was given such a config."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "FSDP"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "DeepSpeed"
    return None


def check_deepspeed_precision(precision: str) -> None:
    """Refuse a DeepSpeed launch whose mixed precision is not the recipe's, before any load.

    DeepSpeed takes it from the accelerate config (``mixed_precision: bf16`` in the shipped
    ZeRO configs) and transformers stops at the first step when the recipe differs.

    Args:
        precision: the recipe's (`bpo.train.runner.mixed_precision`).

    Raises:
        ConfigError: when they differ.
    """
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if requested_sharding() == "DeepSpeed" and launched not in ("no", precision):
        raise ConfigError(
            f"the accelerate config asks DeepSpeed for mixed_precision {launched} and the "
            f"recipe trains in {precision} (train.bf16, train.fp16): make them agree, with "
            f"train.bf16=true or with accelerate launch --mixed_precision {precision}"
        )


def check_sharded_launch() -> None:
    """Refuse a launch whose accelerate config asks for FSDP where accelerate will not shard.

    Call it once the processes are set up (`trl.DPOConfig` does that), before any load.

    Raises:
        ConfigError: when the launch asks for FSDP and the processes run on CPU, where
            accelerate would train them with plain data parallelism.
    """
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    state = PartialState()
    if requested_sharding() != "FSDP" or state.distributed_type == DistributedType.FSDP:
        return
    if state.distributed_type in (DistributedType.MULTI_CPU, DistributedType.NO):
        raise ConfigError(
            f"the accelerate config asks for FSDP, but accelerate set these processes up "
            f"as {state.distributed_type.value} on {state.device.type} (accelerate 1.15 "
            "enables FSDP on GPUs and other accelerators, not on CPUs): they would train "
            "without sharding; launch with recipes/accelerate/ddp.yaml on CPUs, or on GPUs "
            "with train.use_cpu: false"
        )


def fsdp_layer_classes(model: torch.nn.Module) -> list[str]:
    """The class names of the model's ``_no_split_modules`` that it holds, sorted.

    These are the transformer layers (decoder and vision blocks) that FSDP shards one by
    one; a class that the model declares but does not hold is left out.
    """
    declared = set(getattr(model, "_no_split_modules", None) or ())
    held = {type(module).__name__ for module in model.modules()}
    return sorted(declared & held)


class GatherTrainedOutputLayer(TrainerCallback):
    """Under FSDP2, gather a trained output layer before each forward of the language model.

    TRL's fused LM head reads ``lm_head.weight`` without calling the layer, so FSDP's hooks
    never gather it; TRL then gathers the shards with ``DTensor.full_tensor()``, whose
    backward keeps each process's own gradient for its shard instead of the mean over
    processes. accelerate puts the head in an FSDP unit with the model's final norm, which
    would gather it, but finds that norm only on a text model's top level, not inside a
    VLM's language model. Gathered (`FSDPModule.unshard`) before the language model runs,
    the head is a plain tensor when TRL reads it, and FSDP averages its gradient after the
    backward pass (the root's final callback runs the units whose hooks did not fire).
    """

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from torch.distributed.fsdp import FSDPModule

        model = kwargs["model"]
        head = model.get_output_embeddings()
        weight = getattr(head, "weight", None)
        if isinstance(head, FSDPModule) and weight is not None and weight.requires_grad:
            model.get_decoder().register_forward_pre_hook(lambda module, inputs: head.unshard())


def prepare_fsdp_plugin(accelerator: Any, model: Any) -> None:
    """Name the layers for FSDP's transformer-layer auto wrap when the config names none."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None or plugin.auto_wrap_policy is not transformer_auto_wrap_policy:
        return
    if plugin.transformer_cls_names_to_wrap is None:
        plugin.transformer_cls_names_to_wrap = fsdp_layer_classes(model)
