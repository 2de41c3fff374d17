"""Error injection with a text LLM: the gold answer rewritten with common but wrong details.

Pi et al. (2024), Sec. 3.3: the VLM's own base LLM is prompted to rewrite the
gold response so that it carries erroneous but plausible details (objects
that usually co-occur added, removed or swapped; wrong counts, colours, sizes,
positions) while staying fluent. Its errors are those of the language prior,
the bias BPO trains away. Two prompt styles, as in the paper's release (the
wording here is our own), ship in ``bpo/resources``:

- ``instruction``: an instruction to modify the answer;
- ``few-shot``: "you are looking at a similar but different image", with two
  worked examples.

A template file may replace them: plain text with the placeholders
``{response}`` (required) and ``{question}``; ``{{`` and ``}}`` stand for
literal braces.

Outputs are cleaned (labels such as "Modified description:", wrapping quotes,
a few-shot continuation) and filtered: empty ones, ones equal to the gold
answer up to case and punctuation, refusals ("I'm sorry", "As an AI" ...) and
repeats among a sample's negatives are dropped and counted in `dropped`.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo.backends import Backend, GenerationRequest
from bpo.backends.base import check_request
from bpo.bootstrap import sample_seed
from bpo.data.records import Negative, Sample, negative_id
from bpo.errors import BpoError, ConfigError
from bpo.lexicon import normalize_words

if TYPE_CHECKING:
    from PIL import Image

STYLES = {
    "instruction": "llm_injection_instruction.txt",
    "few-shot": "llm_injection_few_shot.txt",
}
PLACEHOLDERS = ("question", "response")
_FIELD = re.compile(r"\{\{|\}\}|\{(\w*)\}")

# A label the model puts before its answer: "Modified description:", "Your image:",
# "Here is the rewritten answer:" (one short line ending with a colon).
_LABEL = re.compile(
    r"^\s*(?:(?:modified|rewritten|new|altered|changed|incorrect)\s+)?"
    r"(?:description|answer|response|version|caption|text)\s*:\s*"
    r"|^\s*your image\s*:\s*"
    r"|^\s*(?:(?:sure|okay|ok|certainly)[,.!]?\s*)?(?:here is|here's)[^\n:]{0,80}:\s*"
    r"|^[^\n]{0,120}\b(?:here is|here's|description|answer|response|version|caption|rewrit\w*)"
    r"\b[^\n]*:[ \t]*\n+",
    re.IGNORECASE,
)
# Where a model continues the few-shot pattern past its own answer: a line (not the
# first) that opens with one of these labels. Written per line (^, MULTILINE) rather
# than as "\n\s*label": that form tried every newline of a run of blank lines
# against the rest of the run, and 20,000 newlines took 14 s.
_CONTINUATION = re.compile(
    r"^[^\S\n]*(?:question|first image|your image)\s*:", re.IGNORECASE | re.MULTILINE
)
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»"}
# Openings of a refusal or a meta answer instead of a description.
REFUSALS = (
    "i'm sorry",
    "i am sorry",
    "sorry,",
    "as an ai",
    "as a language model",
    "i cannot",
    "i can't",
    "i can not",
    "i apologize",
    "i'm unable",
    "i am unable",
    "i won't",
    "i will not",
)


def render_template(template: str, *, question: str, response: str) -> str:
    """`template` with ``{question}`` and ``{response}`` filled in, in one pass.

    A placeholder inside the filled-in values is left as written.
    """
    values = {"question": question, "response": response}

    def fill(match: re.Match[str]) -> str:
        text = match.group()
        return text[0] if text in ("{{", "}}") else values[match.group(1)]

    return _FIELD.sub(fill, template)


def check_template(template: str, *, source: str = "template") -> str:
    """Return `template` if its placeholders are valid.

    Raises:
        ConfigError: ``{response}`` is missing, or an unknown placeholder is used.
    """
    names = {m.group(1) for m in _FIELD.finditer(template) if m.group(1) is not None}
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown placeholders {', '.join('{' + n + '}' for n in unknown)}; "
            "use {question} and {response} (write {{ and }} for literal braces)"
        )
    if "response" not in names:
        raise ConfigError(f"{source}: the template must contain the placeholder {{response}}")
    return template


def load_template(style: str = "instruction", path: str | os.PathLike[str] | None = None) -> str:
    """The prompt template: from `path` if given, else the shipped one for `style`.

    Raises:
        ConfigError: unknown style, unreadable file, or invalid placeholders.
    """
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read template {path}: {error}") from None
        return check_template(text.strip(), source=str(path))
    if style not in STYLES:
        raise ConfigError(f"unknown prompt style {style!r}; choose one of: {', '.join(STYLES)}")
    resource = resources.files("bpo") / "resources" / STYLES[style]
    return check_template(resource.read_text(encoding="utf-8").strip(), source=STYLES[style])


def clean_output(text: str) -> str:
    """The rewritten answer without labels, wrapping quotes or a few-shot continuation."""
    text = text.strip()
    continuation = _CONTINUATION.search(text, 1)  # from 1: not the first line
    if continuation is not None:
        text = text[: continuation.start()]
    text = _LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def is_refusal(text: str) -> bool:
    """Whether `text` opens like a refusal or a meta answer rather than a description."""
    opening = text[:200].lower().replace("’", "'")
    return any(marker in opening for marker in REFUSALS)


def rejection_reason(text: str, gold: str) -> str | None:
    """Why a cleaned output is no usable negative ("empty", "unchanged", "refusal"), or None."""
    if not normalize_words(text):
        return "empty"
    if normalize_words(text) == normalize_words(gold):
        return "unchanged"
    if is_refusal(text):
        return "refusal"
    return None


class LlmInjector:
    """Negatives written by a text LLM asked to put common but wrong details into the gold answer.

    Args:
        backend: a text generation backend (`bpo.backends.Backend`).
        style: "instruction" or "few-shot" (ignored when `template_path` is given).
        template_path: a template file replacing the shipped prompt.
        temperature, top_p, max_new_tokens: sampling settings.
        name: the strategy name written into each negative.

    Raises:
        ConfigError: unknown style, bad template, or sampling settings out of range.
    """

    needs_image = False

    def __init__(
        self,
        backend: Backend,
        *,
        style: str = "instruction",
        template_path: str | os.PathLike[str] | None = None,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_new_tokens: int = 512,
        name: str = "llm-injection",
    ) -> None:
        if style not in STYLES:
            raise ConfigError(f"unknown prompt style {style!r}; choose one of: {', '.join(STYLES)}")
        self.template = load_template(style, template_path)
        self.backend = backend
        self.style = style if template_path is None else "custom"
        self.template_path = str(template_path) if template_path is not None else None
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.name = name
        self.dropped: Counter[str] = Counter()
        check_request(self._request("", None))  # refuse bad sampling settings before any work

    def fit(self, samples: Iterable[Sample]) -> None:
        """Nothing to learn from the data."""

    def prompt(self, sample: Sample) -> str:
        """The prompt that asks the LLM to rewrite `sample`'s gold answer."""
        question = sample.question.replace("<image>", "").strip()
        return render_template(self.template, question=question, response=sample.response.strip())

    def _request(self, prompt: str, seed: int | None) -> GenerationRequest:
        return GenerationRequest(
            messages=[{"role": "user", "content": prompt}],
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=seed,
        )

    def generate(
        self,
        batch: Sequence[tuple[Sample, Image.Image | None]],
        *,
        num_negatives: int,
        seed: int,
    ) -> list[list[Negative]]:
        """Up to `num_negatives` rewrites per sample, all generated in one backend call."""
        requests: list[GenerationRequest] = []
        seeds: list[int] = []
        for sample, _image in batch:
            prompt = self.prompt(sample)
            for k in range(num_negatives):
                seeds.append(sample_seed(seed, sample.id, k))
                requests.append(self._request(prompt, seeds[-1]))
        outputs = self.backend.generate(requests)
        if len(outputs) != len(requests):
            raise BpoError(
                f"backend {self.backend.name!r} returned {len(outputs)} texts "
                f"for {len(requests)} requests"
            )
        results: list[list[Negative]] = []
        position = 0
        for sample, _image in batch:
            negatives: list[Negative] = []
            seen: set[str] = set()
            for k in range(num_negatives):
                text = clean_output(outputs[position])
                k_seed = seeds[position]
                position += 1
                reason = rejection_reason(text, sample.response)
                if reason is None and normalize_words(text) in seen:
                    reason = "duplicate"
                if reason is not None:
                    self.dropped[reason] += 1
                    continue
                seen.add(normalize_words(text))
                negatives.append(
                    Negative(
                        id=negative_id(sample.id, self.name, k),
                        sample_id=sample.id,
                        strategy=self.name,
                        text=text,
                        params=self._params(seed, k_seed),
                    )
                )
            results.append(negatives)
        return results

    def _params(self, seed: int, k_seed: int) -> dict[str, Any]:
        return {
            "backend": self.backend.name,
            "model": self.backend.model_name,
            "style": self.style,
            "template": self.template_path,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "seed": seed,
            "sample_seed": k_seed,
        }
