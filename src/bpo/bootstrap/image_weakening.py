"""Image-weakened prompting: the model answers its own question on a weakened image.

Pi et al. (2024), Sec. 3.2: with the image's information reduced by forward
diffusion noise, the model's answer falls back on its language prior, the bias
BPO trains away. This is plain sampling on the weakened image (the release's
script ran contrastive decoding instead, which is not what the paper describes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bpo.backends import Backend, GenerationRequest
from bpo.bootstrap import sample_seed
from bpo.data.records import Negative, Sample, negative_id
from bpo.errors import RecordError

if TYPE_CHECKING:
    from PIL import Image


class ImageWeakening:
    """Negatives sampled from a VLM shown a distorted copy of the sample's image.

    Args:
        backend: a VLM backend.
        distortion: a name from `bpo.distort.DISTORTIONS` (default: diffusion noise).
        distortion_params: its parameters (default for diffusion: step 500 of 1000).
        temperature, top_p, max_new_tokens: sampling settings.
    """

    name = "image-weakening"
    needs_image = True

    def __init__(
        self,
        backend: Backend,
        *,
        distortion: str = "diffusion",
        distortion_params: dict[str, Any] | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
    ) -> None:
        from bpo.distort import describe

        self.backend = backend
        self.distortion = distortion
        self.distortion_params = dict(distortion_params or {})
        # Validates the name and the parameters before any generation starts.
        describe(distortion, self.distortion_params, 0)
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.dropped: Counter[str] = Counter()

    def fit(self, samples: Iterable[Sample]) -> None:
        """Nothing to learn from the data."""

    def generate(
        self,
        batch: Sequence[tuple[Sample, Image.Image | None]],
        *,
        num_negatives: int,
        seed: int,
    ) -> list[list[Negative]]:
        from bpo.distort import describe, distort

        requests: list[GenerationRequest] = []
        provenance: list[dict[str, Any]] = []
        for sample, image in batch:
            if image is None:
                raise RecordError("image-weakening needs an image", record_id=sample.id)
            for k in range(num_negatives):
                # One seed per negative drives both the noise and the sampling, so
                # a sample's negatives do not depend on what else is in the batch.
                k_seed = sample_seed(seed, sample.id, k)
                weakened = distort(image, self.distortion, seed=k_seed, **self.distortion_params)
                requests.append(
                    GenerationRequest(
                        messages=sample.prompt,
                        image=weakened,
                        max_new_tokens=self.max_new_tokens,
                        temperature=self.temperature,
                        top_p=self.top_p,
                        seed=k_seed,
                    )
                )
                provenance.append(
                    {
                        "backend": self.backend.name,
                        "model": self.backend.model_name,
                        "distortion": describe(self.distortion, self.distortion_params, k_seed),
                        "temperature": self.temperature,
                        "top_p": self.top_p,
                        "max_new_tokens": self.max_new_tokens,
                        "seed": k_seed,
                    }
                )
        texts = iter(self.backend.generate(requests))
        params = iter(provenance)
        results: list[list[Negative]] = []
        for sample, _ in batch:
            negatives = []
            for k in range(num_negatives):
                text, negative_params = next(texts).strip(), next(params)
                if not text:
                    self.dropped["empty"] += 1
                    continue
                negatives.append(
                    Negative(
                        id=negative_id(sample.id, self.name, k),
                        sample_id=sample.id,
                        strategy=self.name,
                        text=text,
                        params=negative_params,
                    )
                )
            results.append(negatives)
        return results
