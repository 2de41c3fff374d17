"""The sections `bpo train` reads: model, data, lora, train; each key a field with its help.

`doc` gives a field its help text, its choices, and whether it can change a
stage's result (`bpo.config.checks.result_settings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Every loss name TRL 1.16's DPOTrainer knows (trl/trainer/dpo_config.py, `loss_type`), plus
# "rpo", bpo's name for DPO + an SFT term on the chosen response (expanded by `loss_types`).
TRL_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip
LOSS_TYPES = (*TRL_LOSS_TYPES, "rpo")


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
            "Arguments of AutoProcessor.from_pretrained, e.g. {size: {longest_edge: 1003520, "
            "shortest_edge: 3136}} to cap Qwen2-VL's visual tokens at 1280 per image "
            "(transformers 5 deprecates the older max_pixels)."
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
            "It packs every family of bpo.tiny_models but Mllama (cross-attention), with sdpa or "
            "eager attention; others fall back to TRL's layout and say why in one line."
        ),
    )
    select: str = field(
        default="all",
        metadata=doc(
            "Pairs trained on: all, or per sample (same prompt and image) the select_k whose "
            "rejected response has the highest reference log-prob per token (hardest; needs "
            "precompute_reference). Writes reference_margins.json to the run folder.",
            choices=("all", "hardest"),
        ),
    )
    select_k: int = field(default=1, metadata=doc("select hardest: pairs kept per sample."))
    image_conditional_weight: float = field(
        default=0.0,
        metadata=doc(
            "Weight of mDPO's image-conditional term (Wang et al. 2024) for the pairs whose "
            "rejected answer came from a weakened image: the gold answer is preferred given the "
            "real image over given the weakened one (rebuilt from the pair's weakening). 0: the "
            "paper's BPO loss."
        ),
    )
    anchor_weight: float = field(
        default=0.0,
        metadata=doc(
            "Weight of mDPO's anchor, -log sigmoid(beta x (chosen log-ratio) - anchor_delta) on "
            "every pair: it keeps the gold answer's reward above anchor_delta. 0: no anchor."
        ),
    )
    anchor_delta: float = field(
        default=0.0, metadata=doc("The anchor's threshold delta on the chosen reward (mDPO: 0).")
    )
    reference_model: str | None = field(
        default=None,
        metadata=doc(
            "The DPO reference: another model (hub id or folder) whose log-probs the policy is "
            "measured against (default: model.name itself, i.e. the policy with its adapter "
            "disabled). `bpo run` sets it for rounds.reference: base."
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
