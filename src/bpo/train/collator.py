"""`PreferenceCollator`: tokenized pairs into TRL's DPO batch, every model input made by the processor.

The token ids come from the cache (`bpo.train.data.tokenize_pairs`, once per pair).
Everything else the model reads comes from the checkpoint's processor, called once
per batch on the stored prompt texts and their images, exactly as TRL's
`DataCollatorForVisionPreference` calls it: the image inputs (``pixel_values``,
``image_sizes``, ``image_grid_thw``, ``pixel_attention_mask``, ``aspect_ratio_ids`` ...)
with the processor's own settings (InternVL's tiling, Pixtral's patch rounding, which
an image processor called alone does not apply), and the per-token outputs
(``token_type_ids``, ``mm_token_type_ids``, Mllama's ``cross_attention_mask``),
extended over the responses as `bpo.processing.extend_per_token` says each family
means them. The processor's prompt ids are checked against the cached ones.

Cost: the processor tokenizes each prompt again at every step (the responses are not
re-tokenized), beside the image preprocessing it does anyway; the image placeholders
it expands are added tokens, matched without BPE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from bpo import processing
from bpo.errors import BpoError

REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
# The reference log-prob of the chosen response on the weakened image (image-conditional term).
WEAKENED_REFERENCE_COLUMN = "ref_chosen_weakened_logps"
# The batch key of the chosen sequences on the weakened images, and its flags' key.
WEAKENED, IS_WEAKENED = "weakened", "is_weakened"


def example_images(example: dict[str, Any]) -> list[Any]:
    """The images of a row (``images``, a list, or ``image``, one), None entries left out."""
    if "images" in example:
        images = example["images"] or []
    else:
        images = [example["image"]] if example.get("image") is not None else []
    return [image for image in images if image is not None]


def prompt_outputs(processor: Any, examples: list[dict[str, Any]]) -> Any:
    """The processor's outputs for the batch's prompts and images, checked against the cached ids.

    One call for the batch, right-padded; the images nested one list per prompt, as TRL
    passes them (None when no prompt has one).
    """
    images = [example_images(example) for example in examples]
    outputs = processor(
        text=[example["prompt_text"] for example in examples],
        images=images if any(images) else None,
        add_special_tokens=False,
        padding=True,
        padding_side="right",
        return_tensors="pt",
    )
    ids = outputs["input_ids"]
    lengths = outputs["attention_mask"].sum(dim=1).tolist()
    for row, example in enumerate(examples):
        cached = list(example["prompt_ids"])
        if lengths[row] != len(cached) or ids[row, : len(cached)].tolist() != cached:
            raise BpoError(
                f"the processor tokenizes the prompt of pair {example.get('id', row)!r} into other "
                "ids than the cached ones: delete the tokenized pairs in the cache folder"
            )
    return outputs


def _stack(rows: list[torch.Tensor], width: int, value: int) -> torch.Tensor:
    """Rows (T_i, ...) padded on the right to `width` with `value`, stacked."""
    out = torch.full((len(rows), width, *rows[0].shape[1:]), value, dtype=rows[0].dtype)
    for index, row in enumerate(rows):
        out[index, : row.size(0)] = row
    return out


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=torch.long)


def plain_layout(
    processor: Any,
    pad_token_id: int,
    prompts: list[list[int]],
    responses: list[list[int]],
    outputs: Any,
    *,
    with_inputs: bool = True,
) -> dict[str, torch.Tensor]:
    """TRL's layout: sequence i is ``prompts[i % B] + responses[i]``, right-padded.

    Args:
        processor: the checkpoint's processor.
        pad_token_id: the id padding the sequences.
        prompts: the B cached prompt ids.
        responses: B responses per copy of the prompts (chosen then rejected: 2B).
        outputs: the processor's outputs for the B prompts and their images.
        with_inputs: add the per-token outputs (extended over each response) and the image
            inputs (repeated for each copy); False gives the ids and masks alone.
    """
    copies = len(responses) // len(prompts)
    prompts_all = prompts * copies
    sequences = [p + r for p, r in zip(prompts_all, responses, strict=True)]
    width = max(len(sequence) for sequence in sequences)
    batch: dict[str, torch.Tensor] = {
        "input_ids": _pad(sequences, pad_token_id),
        "attention_mask": _pad([[1] * len(s) for s in sequences], 0),
        "completion_mask": _pad(
            [[0] * len(p) + [1] * len(r) for p, r in zip(prompts_all, responses, strict=True)], 0
        ),
    }
    if not with_inputs:
        return batch
    per_token, image_inputs = processing.split_outputs(outputs, outputs["input_ids"])
    for key, value in per_token.items():
        rows = [value[index, : len(prompt)] for index, prompt in enumerate(prompts)] * copies
        extended = [
            processing.extend_per_token(processor, key, row, len(response))
            for row, response in zip(rows, responses, strict=True)
        ]
        batch[key] = _stack(extended, width, processing.padding_value(processor, key))
    for key, value in image_inputs.items():
        # TRL's collator passes every prompt and image once per response.
        batch[key] = torch.cat([value] * copies)
    return batch


def weakened_images(example: dict[str, Any]) -> tuple[list[Any], bool]:
    """The images of a row as its rejected answer saw them, and whether they were weakened.

    Rebuilt from the pair's ``weakening`` (distortion, parameters, seed; see
    `bpo.data.records.Pair`): `bpo.distort` is a pure function of them, so the same
    bytes as at bootstrap, and no image file is stored. A row without one keeps its images.
    """
    from bpo.distort import distort

    images = example_images(example)
    weakening = example.get("weakening")
    if not weakening or not images:
        return images, False
    spec = json.loads(weakening)
    kind, seed, params = spec["kind"], spec["seed"], spec.get("params", {})
    return [distort(image, kind, seed=seed, **params) for image in images], True


@dataclass
class PreferenceCollator:
    """Pads tokenized pairs into TRL's DPO batch: chosen sequences, then rejected ones.

    Returns what `trl.DPOTrainer` reads: ``input_ids``, ``attention_mask``,
    ``completion_mask``, every other output of the processor for the prompts and
    images (computed once per pair and repeated for the rejected half; per-token ones
    extended over each response), and the reference log-probs when the rows hold them.
    With `share_prompt`, it adds the packed layout of `bpo.train.shared_prompt`
    (``packed_*`` keys; images once per pair), which `BpoDPOTrainer` runs instead of
    TRL's layout. With `image_conditional`, ``batch["weakened"]`` holds the chosen
    sequences on the weakened images (`weakened_images`) in TRL's layout, whatever the
    main layout, and ``is_weakened`` (1.0 for the pairs whose image was weakened).
    """

    processor: Any
    pad_token_id: int
    share_prompt: bool = False
    image_conditional: bool = False

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        prompts = [list(example["prompt_ids"]) for example in examples]
        chosens = [list(example["chosen_ids"]) for example in examples]
        rejecteds = [list(example["rejected_ids"]) for example in examples]
        outputs = prompt_outputs(self.processor, examples)
        batch: dict[str, Any] = plain_layout(
            self.processor,
            self.pad_token_id,
            prompts,
            chosens + rejecteds,
            outputs,
            with_inputs=not self.share_prompt,
        )
        if self.share_prompt:
            batch.update(self._packed(outputs, prompts, chosens, rejecteds, batch))
        if self.image_conditional:
            batch[WEAKENED] = self._weakened(examples, prompts, chosens)
        if REFERENCE_COLUMNS[0] in examples[0]:
            for key in (*REFERENCE_COLUMNS, WEAKENED_REFERENCE_COLUMN):
                if key in examples[0]:
                    batch[key] = torch.tensor([example[key] for example in examples])
        return batch

    def _packed(
        self,
        outputs: Any,
        prompts: list[list[int]],
        chosens: list[list[int]],
        rejecteds: list[list[int]],
        plain: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The ``packed_*`` keys of `bpo.train.shared_prompt` and the images, once per pair."""
        from bpo.train.shared_prompt import pack_pairs, pack_token_types

        width = plain["input_ids"].size(1)
        batch = pack_pairs(prompts, chosens, rejecteds, self.pad_token_id, width)
        per_token, image_inputs = processing.split_outputs(outputs, outputs["input_ids"])
        for key, value in per_token.items():
            if key == "attention_mask":
                continue  # the packed layout builds its own 4D mask
            if key in processing.TOKEN_TYPE_KEYS and processing.appended_token_type(self.processor):
                # PaliGemma: its types mark the prefix, which in the packed layout is
                # the prompt segment by construction (bpo.train.shared_prompt.forward).
                continue
            if key not in processing.TOKEN_TYPE_KEYS:
                raise BpoError(f"the shared-prompt layout does not carry {key!r} yet")
            total = batch["packed_input_ids"].size(1)
            types = [value[index, : len(prompt)].tolist() for index, prompt in enumerate(prompts)]
            batch[f"packed_{key}"] = pack_token_types(types, batch["packed_lengths"], total)
        batch.update(image_inputs)  # in sample (or image) order, once per pair
        return batch

    def _weakened(
        self, examples: list[dict[str, Any]], prompts: list[list[int]], chosens: list[list[int]]
    ) -> dict[str, torch.Tensor]:
        """The chosen sequences on the weakened images, in TRL's layout, and the flags."""
        rows, flags = [], []
        for example in examples:
            images, weakened = weakened_images(example)
            rows.append({**example, "images": images})
            flags.append(float(weakened))
        outputs = prompt_outputs(self.processor, rows)
        batch = plain_layout(self.processor, self.pad_token_id, prompts, chosens, outputs)
        batch[IS_WEAKENED] = torch.tensor(flags)
        return batch
