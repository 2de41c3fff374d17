"""Seeded per-row sampling for the hf backend, as logits processors of `model.generate`.

Sampling is greedy decoding over Gumbel-perturbed, temperature-scaled, top-p-filtered
logits (the Gumbel-max trick: the argmax of logits/T plus Gumbel noise is a draw from
softmax(logits/T), after top-p filtering). Each row draws its noise from its own
`torch.Generator`, seeded from its request's seed, so a request's seed fixes its text
whatever else shares its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bpo.backends.base import GenerationRequest

if TYPE_CHECKING:
    import torch


def logits_processors(requests: Sequence[GenerationRequest]) -> Any:
    """The processors that sample a batch of requests sharing sampling settings.

    Greedy requests (temperature 0) get none. There is no top-k (transformers' default
    of 50 would apply otherwise), as in the OpenAI API and vLLM.
    """
    from transformers import LogitsProcessorList

    first = requests[0]
    processors = LogitsProcessorList()
    if first.temperature > 0:
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        processors.append(TemperatureLogitsWarper(first.temperature))
        if first.top_p < 1.0:
            processors.append(TopPLogitsWarper(first.top_p))
        processors.append(PerRowGumbel([request.seed for request in requests]))
    return processors


class PerRowGumbel:
    """Adds Gumbel noise to each row's scores from that row's own seeded generator.

    With greedy decoding this samples every row independently of the others (the
    Gumbel-max trick), so a request's seed alone decides its text.
    """

    def __init__(self, seeds: Sequence[int | None]) -> None:
        import torch

        self.generators = []
        for seed in seeds:
            generator = torch.Generator()
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
            self.generators.append(generator)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        uniform = torch.stack(
            [torch.rand(scores.shape[-1], generator=g) for g in self.generators]
        ).to(scores.device)
        # -log(-log(U)), with U kept off 0 and 1 so the noise stays finite.
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1.0 - 1e-7)))
        return scores.float() + gumbel
