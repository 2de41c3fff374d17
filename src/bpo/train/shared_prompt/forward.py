"""`SharedPromptForward`: the model called with the packed layout, answering in TRL's layout."""

from __future__ import annotations

from typing import Any

import torch

from bpo.errors import ConfigError
from bpo.train.shared_prompt.families import FAMILIES, attention_kernel, layer_kinds, text_config
from bpo.train.shared_prompt.layout import (
    PROMPT,
    block_ids,
    segments,
    shared_prompt_mask,
    shared_prompt_positions,
)

# Keys of TRL's layout that the packed sequence replaces.
_TRL_LAYOUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids", "labels")
_PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
# Passed to get_rope_index when the batch has them (videos; Qwen2.5-VL's seconds per grid).
_ROPE_INDEX_KEYS = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")


class SharedPromptForward:
    """Calls a VLM with the packed layout and returns TRL's fused-LM-head output in TRL's layout.

    Stands in for the model in `trl.DPOTrainer`'s ``model(**inputs, labels=...,
    fused_lm_head=True)`` calls: it reads the ``packed_*`` keys of the batch
    (`bpo.train.shared_prompt.pack_pairs`), ignores TRL's layout keys, and returns a
    `FusedCausalLMOutput` whose per-token fields have TRL's (2B, L - 1) shape.

    Args:
        model: the model to call (PEFT, DDP or DeepSpeed wrapped, with TRL's fused head).
        base: the underlying transformers model (for its config and position ids), of a
            family `bpo.train.shared_prompt.supports_shared_prompt` accepts.
    """

    def __init__(self, model: Any, base: Any) -> None:
        self.model = model
        self.base = base
        self.family = FAMILIES[base.config.model_type]
        self.kernel = attention_kernel(base)
        config = text_config(base)
        self.kinds = layer_kinds(config)
        self.sliding_window: int | None = getattr(config, "sliding_window", None)

    def _positions(self, inputs: dict[str, Any], lengths: torch.Tensor) -> torch.Tensor:
        """Position ids of the packed batch: the prompt's as TRL's layout has them, then both
        responses from the position TRL gives the first response token."""
        ids = inputs["packed_input_ids"]
        total = ids.size(1)
        p = lengths[:, 0:1]
        if self.family.positions == "text":
            first = self.family.first_position
            prompt = torch.arange(total, device=ids.device).expand(ids.size(0), -1) + first
            return shared_prompt_positions(lengths, prompt, p + first, total)
        # Qwen's multimodal RoPE: the model's own get_rope_index on the prompts alone. Its
        # offset (max position + 1 - P) continues them as transformers continues a prompt in
        # generation (compute_3d_position_ids: positions + rope_deltas), which is what
        # get_rope_index gives the text after the prompt in TRL's [prompt | response].
        in_prompt = torch.arange(total, device=ids.device).unsqueeze(0) < p
        extra = {key: inputs[key] for key in _ROPE_INDEX_KEYS if inputs.get(key) is not None}
        prompt, offset = self.base.model.get_rope_index(
            input_ids=ids,
            mm_token_type_ids=inputs["packed_mm_token_type_ids"],
            attention_mask=in_prompt.long(),
            **extra,
        )
        return shared_prompt_positions(lengths, prompt, p + offset.to(p.device), total)

    def _blocks(self, inputs: dict[str, Any], lengths: torch.Tensor) -> torch.Tensor | None:
        """Bidirectional block ids of the prompt tokens, or None for a causal family."""
        if self.family.blocks is None:
            return None
        total = inputs["packed_input_ids"].size(1)
        in_prompt = segments(lengths, total) == PROMPT
        types = inputs.get("packed_token_type_ids")
        if self.family.blocks == "image":  # Gemma 3: token_type_ids == 1 marks image tokens
            if types is None:
                return None
            return block_ids(in_prompt & (types == 1), contiguous_groups=True)
        # PaliGemma: the prefix is the prompt (token_type_ids == 0; responses are its suffix).
        prefix = in_prompt if types is None else in_prompt & (types == 0)
        return block_ids(prefix, contiguous_groups=False)

    def _check_one_mask_fits(self, lengths: torch.Tensor) -> None:
        # One 4D mask serves every layer (PaliGemma 2's Gemma 2: sliding and global). It is
        # exact for the sliding layers only while no TRL sequence outgrows their window,
        # where the window masks nothing in TRL's layout either.
        window = self.sliding_window
        longest = int((lengths[:, 0] + lengths[:, 1:].max(dim=1).values).max())
        if window is not None and longest > window:
            raise ConfigError(
                f"shared prompt: a pair of {longest} tokens outgrows the {window}-token sliding "
                f"window of {self.base.config.model_type}, whose sliding and global layers "
                "share one mask; set data.max_length to at most the window, or "
                "train.share_prompt=false"
            )

    def _attention_mask(self, inputs: dict[str, Any], lengths: torch.Tensor) -> Any:
        """The 4D mask, or ``{layer kind: 4D mask}`` where layers differ (sliding windows)."""
        total = inputs["packed_input_ids"].size(1)
        blocks = self._blocks(inputs, lengths)

        def build(kind: str) -> torch.Tensor:
            window = self.sliding_window if kind == "sliding_attention" else None
            mask = shared_prompt_mask(lengths, total, blocks=blocks, window=window)
            if self.kernel == "eager":  # additive float mask
                dtype = self.base.dtype
                return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                    ~mask, torch.finfo(dtype).min
                )
            return mask

        if len(self.kinds) == 1:
            return build(self.kinds[0])
        if not self.family.mask_mapping:
            self._check_one_mask_fits(lengths)
            return build("full_attention")
        return {kind: build(kind) for kind in self.kinds}

    def __call__(self, **inputs: Any) -> Any:
        from trl.trainer.utils import FusedCausalLMOutput

        lengths = inputs["packed_lengths"]
        ids = inputs["packed_input_ids"]
        kwargs = {
            key: value
            for key, value in inputs.items()
            if key not in _TRL_LAYOUT_KEYS and not key.startswith("packed_")
        }
        if "packed_mm_token_type_ids" in inputs:
            kwargs["mm_token_type_ids"] = inputs["packed_mm_token_type_ids"]
        kwargs["use_cache"] = False
        outputs = self.model(
            input_ids=ids,
            attention_mask=self._attention_mask(inputs, lengths),
            position_ids=self._positions(inputs, lengths),
            labels=inputs["packed_labels"],
            **kwargs,
        )
        index = inputs["packed_index"]
        valid = index >= 0
        safe = index.clamp(min=0)
        fields: dict[str, Any] = {}
        for name in _PER_TOKEN_FIELDS:
            value = getattr(outputs, name, None)
            if value is not None:
                gathered = value.reshape(-1)[safe.reshape(-1)].view(index.shape)
                fields[name] = gathered.masked_fill(~valid, 0)
        return FusedCausalLMOutput(
            log_probs=fields.get("log_probs"),
            entropy=fields.get("entropy"),
            log_sum_sq_probs=fields.get("log_sum_sq_probs"),
            mean_logits=fields.get("mean_logits"),
            is_top1=fields.get("is_top1"),
            label_mask=valid,
            aux_loss=getattr(outputs, "aux_loss", None),
        )
