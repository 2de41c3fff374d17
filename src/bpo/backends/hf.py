"""Local generation with transformers: batched, left-padded `model.generate`.

A vision-language checkpoint loads as `AutoModelForImageTextToText` with its
`AutoProcessor`; a text-only one (no vision config, e.g. the base LLM that
rewrites answers for llm-injection) as `AutoModelForCausalLM` with its
`AutoTokenizer`. Both render prompts with the checkpoint's own chat template
(PaliGemma, which ships none, in its documented prefix format: `bpo.processing`),
and the processor makes every model input. Generation stops at the checkpoint's
EOS tokens and at the token its template ends an assistant's turn with.

Control tokens. Text in a request may not write control tokens: an "<image>" in a
question stays text instead of claiming a missing image, an "<|im_end|>" cannot
close the turn. Where a request's text holds one, the prompt is encoded with
transformers' ``sanitize_control_tokens``, which encodes such tokens as text. Some
processors cannot do that in transformers 5.24 (Idefics3's needs character offsets
that the sanitized encoding lacks; PaliGemma's, InternVL's and Mllama's count the
marked token as an image, and PaliGemma's loses its ``token_type_ids``); with those,
such a request is refused, naming the token. Text without control tokens is encoded
without marking, which gives the same ids (and works with every processor).

Seeds. Requests are grouped by sampling settings and generated in batches.
Sampling draws each row's token with its own `torch.Generator`, seeded from the
request's seed (`bpo.backends.hf_sampling`). So a request's seed fixes its text
whatever else shares its batch, and a resumed or sharded run samples what an
uninterrupted one would (up to float differences that padding causes).

Speed. Requests are sorted longest first within a group (less padding) and come
back in request order; a second thread makes the next batch's inputs while this
one generates; on a CPU the KV cache is static (written in place).
bench/generation.py measures it against one `model.generate` per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo import processing
from bpo.backends.base import (
    Completion,
    GenerationRequest,
    check_request,
    multimodal_messages,
    sampling_key,
)
from bpo.backends.hf_sampling import logits_processors
from bpo.checkpoints import ModelSource
from bpo.errors import ConfigError

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "float32", "float16", "bfloat16")


class HFBackend:
    """Generates with a transformers model on this machine.

    Args:
        model: a model directory (or hub name) saved with `save_pretrained`.
        device: where to run, e.g. "cpu", "cuda", "cuda:1".
        dtype: "auto" (the checkpoint's), "float32", "float16" or "bfloat16".
        batch_size: the most requests generated together.
        trust_remote_code: run code shipped with the checkpoint; off unless asked.
        allow_pickle: load pickle-based weights when the checkpoint has no safetensors;
            off unless asked (see `bpo.checkpoints`).
        processor_kwargs: arguments of ``AutoProcessor.from_pretrained`` (a recipe's
            ``model.processor_kwargs``: the image sizes the model is trained at).
    """

    name = "hf"

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int = 16,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        processor_kwargs: dict[str, Any] | None = None,
    ) -> None:
        import torch
        import transformers
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        from bpo.compat import allow_processors_without_torchvision

        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA device")
        self.model_name = str(model)
        self.batch_size = batch_size
        self.device = device
        source = ModelSource.resolve(
            model, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle
        )
        config = source.load_config()
        self.is_vision = (
            config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
            or getattr(config, "vision_config", None) is not None
        )
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        if self.is_vision:
            # Qwen2-VL-style processors (with a video part) need torchvision in
            # transformers 5 even for images; where it is missing (the CPU set-up),
            # load them for images only. A no-op where torchvision is installed.
            allow_processors_without_torchvision()
            self.processor: Any = source.load(
                transformers.AutoProcessor, "processor", **(processor_kwargs or {})
            )
            self.tokenizer: Any = self.processor.tokenizer
            auto_model: Any = transformers.AutoModelForImageTextToText
        else:
            self.processor = self.tokenizer = source.load(transformers.AutoTokenizer, "tokenizer")
            auto_model = transformers.AutoModelForCausalLM
        self.model: Any = source.load_model(auto_model, config=config, dtype=torch_dtype)
        try:
            self.chat_template = processing.chat_template(self.processor)
        except ConfigError:
            raise ConfigError(f"model {self.model_name!r} has no chat template") from None
        # Decoder-only generation continues from the last position: pad on the left.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.to(device).eval()
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        stops = set(eos if isinstance(eos, list) else [eos])
        # The template's end of turn too: a generation config may list EOS alone (a base
        # model's), and a chat prompt must end with the assistant's turn.
        end_of_turn = processing.end_of_turn_token(self.processor, self.chat_template)
        if end_of_turn is not None:
            stops.add(self.tokenizer.convert_tokens_to_ids(end_of_turn))
        self.end_of_turn = end_of_turn
        self.stop_token_ids: frozenset[int] = frozenset(stops)
        self._control_tokens = processing.control_tokens(self.processor)

    def generate(
        self, requests: Sequence[GenerationRequest], *, progress: bool = False
    ) -> list[str]:
        """One generated text per request, in order (see the module docstring on seeds)."""
        return [completion.text for completion in self.complete(requests, progress=progress)]

    def complete(
        self, requests: Sequence[GenerationRequest], *, progress: bool = False
    ) -> list[Completion]:
        """Like `generate`, with token counts and the reason each generation stopped."""
        from tqdm.auto import tqdm

        for request in requests:
            check_request(request)
            if request.image is not None and not self.is_vision:
                raise ConfigError(f"model {self.model_name!r} is text-only; it cannot take images")
        # Batch only requests that share sampling settings (and image or not); longest
        # first within a group, so batches hold similar lengths (less padding) and an
        # out-of-memory error shows on the first batch rather than the last.
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, request in enumerate(requests):
            key = (*sampling_key(request), request.image is not None)
            groups.setdefault(key, []).append(index)
        chunks = []
        for indices in groups.values():
            indices.sort(key=lambda i: -sum(len(m["content"]) for m in requests[i].messages))
            chunks += [
                indices[start : start + self.batch_size]
                for start in range(0, len(indices), self.batch_size)
            ]
        results: list[Completion | None] = [None] * len(requests)
        # The next batch's inputs (chat template, tokenizer, image processor: 12 % of a
        # batch's time in a CPU profile) are made in a second thread while this one generates.
        # Tokenizing and decoding never overlap: a fast tokenizer is not thread-safe.
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="bpo-inputs") as pool,
            tqdm(
                total=len(requests), desc="generating", unit="sample", disable=not progress
            ) as bar,
        ):

            def prepare(chunk: list[int]) -> Future[Any]:
                return pool.submit(self._inputs, [requests[i] for i in chunk])

            upcoming = prepare(chunks[0]) if chunks else None
            for number, chunk in enumerate(chunks):
                assert upcoming is not None
                inputs = upcoming.result()
                upcoming = prepare(chunks[number + 1]) if number + 1 < len(chunks) else None
                new_tokens = self._generate_tokens([requests[i] for i in chunk], inputs)
                if upcoming is not None:
                    wait([upcoming])
                completions = self._completions(inputs, new_tokens)
                for i, completion in zip(chunk, completions, strict=True):
                    results[i] = completion
                bar.update(len(chunk))
        return [completion for completion in results if completion is not None]

    def _inputs(self, requests: Sequence[GenerationRequest]) -> Any:
        """Tokenized, left-padded prompts (and image inputs) on the model's device."""
        if self.is_vision:
            conversations = []
            for request in requests:
                messages = multimodal_messages(request)
                for message in messages:
                    for part in message["content"]:
                        if part["type"] == "image":
                            part["image"] = request.image
                conversations.append(messages)
            inputs = self.processor.apply_chat_template(
                conversations,
                chat_template=self.chat_template,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"padding": True},
                **self._sanitizing(conversations),
            )
            for key in processing.DROPPED_KEYS:  # PaliGemma's labels: generation makes none
                inputs.pop(key, None)
            # Image inputs in the model's dtype (bfloat16 on GPU); token ids stay integers.
            return inputs.to(self.model.device, dtype=self.model.dtype)
        inputs = self.tokenizer.apply_chat_template(
            [request.messages for request in requests],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            sanitize_control_tokens=True,
            padding=True,
        )
        return inputs.to(self.model.device)

    def _sanitizing(self, conversations: list[list[dict[str, Any]]]) -> dict[str, bool]:
        """``sanitize_control_tokens`` where the text holds a control token (see the module doc).

        Raises:
            ConfigError: when it does and the processor cannot encode it as text.
        """
        found = processing.control_tokens_in(conversations, self._control_tokens)
        if not found:
            return {}
        if not self.sanitizes_control_tokens:
            raise ConfigError(
                f"a prompt holds {', '.join(map(repr, found))}, a control token of "
                f"{type(self.processor).__name__}, which cannot encode it as text: "
                "remove it from the prompt"
            )
        return {"sanitize_control_tokens": True}

    @cached_property
    def sanitizes_control_tokens(self) -> bool:
        """Whether the processor encodes its image token, written in a prompt's text, as text.

        Tried once, on a blank image: with ``sanitize_control_tokens``, the prompt with the
        token must encode without error, with the outputs and image tokens of the prompt
        without it.
        """
        from PIL import Image

        token = getattr(self.processor, "image_token", None) or self._control_tokens[0]
        image = Image.new("RGB", (32, 32))

        def encode(text: str, **sanitize: bool) -> Any:
            content = [{"type": "image", "image": image}, {"type": "text", "text": text}]
            return self.processor.apply_chat_template(
                [[{"role": "user", "content": content}]],
                chat_template=self.chat_template,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                **sanitize,
            )

        try:
            plain, marked = (
                encode("Is it?"),
                encode(f"Is {token} it?", sanitize_control_tokens=True),
            )
        except Exception:  # any failure means: it cannot
            return False
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        counts = [list(encoded["input_ids"][0]).count(token_id) for encoded in (plain, marked)]
        return set(plain) == set(marked) and counts[0] == counts[1]

    def _generate_tokens(self, requests: Sequence[GenerationRequest], inputs: Any) -> Any:
        """The new tokens of a batch (one row per request), from its model inputs.

        On a CPU, a static KV cache, written in place: the dynamic cache concatenates every
        layer's keys and values at each step (10-20 % of a decoding step at batch 16 in a
        CPU profile of bench/generation.py; 5 % less CPU time in all with the static one),
        not compiled (``disable_compile``: compiling took a minute and gained nothing).
        On a GPU the dynamic cache stays: a static one, uncompiled, reads its whole length
        at every step, and it has not been measured there.
        """
        import torch

        first = requests[0]
        cache = (
            {"cache_implementation": "static", "disable_compile": True}
            if self.device == "cpu"
            else {}
        )
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=first.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=sorted(self.stop_token_ids),
                do_sample=False,
                logits_processor=logits_processors(requests),
                **cache,
            )
        return output[:, inputs["input_ids"].shape[1] :]

    def _completions(self, inputs: Any, new_tokens: torch.Tensor) -> list[Completion]:
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        return [
            self._completion(text, row, int(prompt_length))
            for text, row, prompt_length in zip(texts, new_tokens, prompt_lengths, strict=True)
        ]

    def _completion(self, text: str, row: torch.Tensor, prompt_length: int) -> Completion:
        for position, token in enumerate(row.tolist()):
            if token in self.stop_token_ids:
                return Completion(text.strip(), prompt_length, position + 1, "stop")
        return Completion(text.strip(), prompt_length, len(row), "length")

    def score(self, requests: Sequence[GenerationRequest], responses: Sequence[str]) -> list[float]:
        """The summed log-probability of each response given its prompt (and image).

        Prompt and response are tokenized separately and concatenated, as TRL's DPO
        trainer does, so the score matches what training sees. One request per
        forward pass: no padding, hence exact and independent of the other requests.
        """
        import torch

        if len(requests) != len(responses):
            raise ConfigError(f"{len(requests)} requests but {len(responses)} responses")
        scores = []
        for request, response in zip(requests, responses, strict=True):
            inputs = self._inputs([request])
            prompt_ids = inputs["input_ids"]
            response_ids = torch.tensor(
                [self.tokenizer(response, add_special_tokens=False)["input_ids"]],
                dtype=prompt_ids.dtype,
                device=prompt_ids.device,
            )
            if response_ids.shape[1] == 0:
                scores.append(0.0)
                continue
            # Extend every per-token input over the response as the processor would give it
            # for prompt and response together (bpo.processing.extend_per_token: Qwen's
            # mm_token_type_ids 0, PaliGemma's token_type_ids 1, Mllama's cross-attention
            # mask ...), as training does.
            count = response_ids.shape[1]
            if self.is_vision:
                per_token, _ = processing.split_outputs(inputs, prompt_ids)
            else:
                per_token = {"attention_mask": inputs["attention_mask"]}
            for key, value in per_token.items():
                extended = processing.extend_per_token(self.processor, key, value[0], count)
                inputs[key] = extended.unsqueeze(0)
            inputs["input_ids"] = torch.cat([prompt_ids, response_ids], dim=1)
            with torch.inference_mode():
                logits = self.model(**inputs).logits[0, prompt_ids.shape[1] - 1 : -1].float()
            logps = torch.log_softmax(logits, dim=-1).gather(1, response_ids[0].unsqueeze(1))
            scores.append(float(logps.sum()))
        return scores

    def close(self) -> None:
        """Drop the model so its memory can be reclaimed."""
        self.model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
