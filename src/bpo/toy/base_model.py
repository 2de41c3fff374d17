"""The toy world's biased base model: a tiny LLaVA trained from scratch in three stages.

The stages mirror how LLaVA-1.5 is made (Liu et al. 2023), which is where the
bias BPO removes comes from:

a. a vision encoder that sees the objects: the CLIP tower is pretrained on the
   world's *balanced* scenes (every object present half the time, so a
   dependent says nothing about its anchor) with a presence head on its patch
   features, then frozen, as LLaVA keeps CLIP frozen;
b. a language model that learned what goes with what: text-only pretraining on
   the caption corpus of biased scenes (a dependent beside 95% of its anchors),
   as Vicuna brings its prior from text;
c. limited visual instruction tuning of the projector and the language model on
   the ``sft`` split (captions and yes/no answers).

Nothing tells the model what to say: its bias is whatever these data
statistics and this little grounding leave. In the second design study of
issue 6 this recipe gave a base that names the absent partner in 69% of the
counterfactual scenes while its encoder detects it.

The model is the real `LlavaForConditionalGeneration`, built by
`bpo.tiny_models.build_tiny_model` (its tokenizer, processor and LLaVA-1.5 chat
template) at study 2's sizes, trained with plain torch loops (this builds a
pretrained model; preference training is `bpo train`'s job) and saved with
`save_pretrained`: it loads with ``AutoModelForImageTextToText`` and
``AutoProcessor`` like any checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo.console import hide_bar
from bpo.data.images import load_image
from bpo.data.records import Sample, chat_messages
from bpo.errors import ConfigError
from bpo.fsio import write_text
from bpo.tiny_models import build_tiny_model
from bpo.toy.world import ToyWorld

if TYPE_CHECKING:
    import torch
    from transformers import LlavaForConditionalGeneration, ProcessorMixin

BUILD_FILE = "toy_base.json"
# The checkpoint shipped in the package (see `shipped_checkpoint`) and how it was made.
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoint"
SHIPPED_SEED = 0
SHIPPED_WORLD_SEED = 0
IGNORE_INDEX = -100  # the label transformers' loss skips


@dataclass(frozen=True)
class BaseModelSettings:
    """Sizes and training settings of the base model; every field can be overridden.

    Sizes follow study 2 of issue 6 (CLIP 64-d x 3 layers, Llama 128-d x 3 layers,
    ~0.85M parameters). The step counts are smaller than the study's (1500 text and
    1000 SFT steps) to keep the demo within its time budget; see the report in
    ``bench/toy_base.py`` for what they give.

    Attributes:
        hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
        intermediate_size: the Llama language model.
        vision_hidden_size, vision_num_hidden_layers, vision_num_attention_heads:
            the CLIP vision tower.
        vocab_size: target vocabulary of `bpo.tiny_models`'s tokenizer trainer.
        patch_size: side of the CLIP patches. 12 px on the 48 px scenes gives 16
            image tokens (8 px would give 36 and make every step about twice as slow);
            a 4-6 px dependent still falls within one or two patches.
        vision_steps, vision_batch_size, vision_lr: stage (a).
        text_steps, text_batch_size, text_lr: stage (b).
        sft_steps, sft_batch_size, sft_lr: stage (c).
        warmup: share of each stage's steps spent warming the learning rate up
            (then cosine decay to zero).
        threads: torch CPU threads. The weights depend on it (reductions split
            differently), so it is part of what makes a build reproducible. One thread
            by default: these matrices are too small to gain much from a second, and on
            a shared 2-core machine two threads ran an SFT step 30x slower than one
            (0.13 s vs 3.9 s, each waiting on the other at every operation).
    """

    hidden_size: int = 128
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    intermediate_size: int = 256
    vision_hidden_size: int = 64
    vision_num_hidden_layers: int = 3
    vision_num_attention_heads: int = 4
    vocab_size: int = 1024
    patch_size: int = 12
    vision_steps: int = 200
    vision_batch_size: int = 64
    vision_lr: float = 2e-3
    text_steps: int = 300
    text_batch_size: int = 64
    text_lr: float = 2e-3
    sft_steps: int = 600
    sft_batch_size: int = 32
    sft_lr: float = 2e-3
    warmup: float = 0.05
    threads: int = 1


_TINY_MODEL_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vision_hidden_size",
    "vision_num_hidden_layers",
    "vision_num_attention_heads",
    "vocab_size",
)


def base_model_settings(**overrides: Any) -> BaseModelSettings:
    """`BaseModelSettings` with `overrides`; unknown names or bad values raise `ConfigError`."""
    valid = {item.name: item for item in fields(BaseModelSettings)}
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown base-model setting {unknown}; valid: {', '.join(sorted(valid))}"
        )
    for name, value in overrides.items():
        kind = type(getattr(BaseModelSettings(), name))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"base-model setting {name} must be a number, got {value!r}")
        if kind is int and not isinstance(value, int):
            raise ConfigError(f"base-model setting {name} must be an integer, got {value!r}")
        if value < 0 or (value == 0 and name != "warmup"):
            raise ConfigError(f"base-model setting {name} must be positive, got {value!r}")
    return replace(BaseModelSettings(), **overrides)


# --- training helpers ------------------------------------------------------------------


def _batches(count: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[Any]:
    """`steps` batches of indices: shuffled epochs over `count` items, drawn with `generator`."""
    import torch

    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while len(order) < batch_size:
            order = torch.cat([order, torch.randperm(count, generator=generator)])
        yield order[:batch_size]
        order = order[batch_size:]


def _optimizer(parameters: Sequence[Any], lr: float, steps: int, warmup: float) -> tuple[Any, Any]:
    """AdamW with linear warm-up and cosine decay (transformers' schedule)."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, math.ceil(warmup * steps), steps)
    return optimizer, schedule


def _train(
    name: str,
    parameters: Sequence[Any],
    loss_of_batch: Any,
    *,
    count: int,
    batch_size: int,
    steps: int,
    lr: float,
    warmup: float,
    generator: torch.Generator,
    progress: bool,
) -> float:
    """One training stage; returns the mean loss of its last 10% of steps."""
    from tqdm.auto import tqdm

    optimizer, schedule = _optimizer(parameters, lr, steps, warmup)
    losses: list[float] = []
    bar = tqdm(
        _batches(count, batch_size, steps, generator),
        total=steps,
        desc=name,
        unit="step",
        disable=hide_bar(progress),
    )
    for indices in bar:
        loss = loss_of_batch(indices)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
    tail = losses[-max(1, steps // 10) :]
    return sum(tail) / len(tail)


def _pixel_values(
    processor: ProcessorMixin, world: ToyWorld, samples: Sequence[Sample]
) -> torch.Tensor:
    """The processor's pixel values of each sample's image, stacked."""
    import torch

    image_processor = processor.image_processor
    # The scenes already have the processor's size, so resizing and cropping are the
    # identity (checked in the tests); skipping them halves the preprocessing time.
    side = world.spec.image_size
    crop, size = image_processor.crop_size, image_processor.size
    exact = (crop.height, crop.width, size.shortest_edge) == (side, side, side)
    chunks = []
    for start in range(0, len(samples), 256):
        images = [
            load_image(sample.image or "", world.root, record_id=sample.id)
            for sample in samples[start : start + 256]
        ]
        chunks.append(
            image_processor(
                images=images, return_tensors="pt", do_resize=not exact, do_center_crop=not exact
            )["pixel_values"]
        )
    return torch.cat(chunks)


def _presence(world: ToyWorld, samples: Sequence[Sample]) -> torch.Tensor:
    import torch

    names = world.spec.names
    return torch.tensor(
        [[float(name in sample.meta["objects"]) for name in names] for sample in samples]
    )


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    import torch

    width = max(len(row) for row in rows)
    return torch.tensor([list(row) + [value] * (width - len(row)) for row in rows])


# --- stages ----------------------------------------------------------------------------


def _patch_features(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> Any:
    """The vision features LLaVA feeds its projector (the CLS position dropped)."""
    outputs = model.model.vision_tower(pixel_values, output_hidden_states=True)
    return outputs.hidden_states[model.config.vision_feature_layer][:, 1:]


def _stage_vision(
    model: LlavaForConditionalGeneration,
    processor: ProcessorMixin,
    world: ToyWorld,
    settings: BaseModelSettings,
    generator: torch.Generator,
    progress: bool,
) -> dict[str, Any]:
    """(a) Pretrain the vision tower with a presence head on balanced scenes, then freeze it.

    The head scores every patch for every category and takes the maximum over
    patches (multiple-instance learning): a small object decides through the few
    patches it covers, so the patch features LLaVA's projector reads must carry it.
    """
    import torch

    samples = list(world.samples("vision", task="caption"))
    pixels = _pixel_values(processor, world, samples)
    labels = _presence(world, samples)
    tower = model.model.vision_tower
    head = torch.nn.Linear(tower.config.hidden_size, len(world.spec.names))

    def loss_of_batch(indices: torch.Tensor) -> torch.Tensor:
        logits = head(_patch_features(model, pixels[indices])).amax(dim=1)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[indices])

    tower.train()
    loss = _train(
        "toy base (a) vision",
        [*tower.parameters(), *head.parameters()],
        loss_of_batch,
        count=len(samples),
        batch_size=settings.vision_batch_size,
        steps=settings.vision_steps,
        lr=settings.vision_lr,
        warmup=settings.warmup,
        generator=generator,
        progress=progress,
    )
    tower.eval()
    tower.requires_grad_(False)

    # A probe on the validation scenes (never trained on): can the frozen encoder see each object?
    held_out = list(world.samples("validation", task="caption"))
    with torch.no_grad():
        predicted = head(_patch_features(model, _pixel_values(processor, world, held_out)))
    correct = (predicted.amax(dim=1) > 0).float() == _presence(world, held_out)
    accuracy = correct.float().mean(dim=0).tolist()
    return {
        "loss": loss,
        "probe_accuracy": dict(zip(world.spec.names, accuracy, strict=True)),
    }


def _stage_text(
    model: LlavaForConditionalGeneration,
    processor: ProcessorMixin,
    world: ToyWorld,
    settings: BaseModelSettings,
    generator: torch.Generator,
    progress: bool,
) -> dict[str, Any]:
    """(b) Pretrain the language model on the caption corpus, text only (the prior)."""
    tokenizer = processor.tokenizer
    # Raw text framed as a document: <s> caption </s> (no chat turn, as in LM pretraining).
    # Captions repeat (a few hundred distinct ones): tokenize each once.
    corpus = world.corpus()
    distinct = sorted(set(corpus))
    encoded = dict(
        zip(distinct, tokenizer(distinct, add_special_tokens=False)["input_ids"], strict=True)
    )
    rows = [[tokenizer.bos_token_id, *encoded[line], tokenizer.eos_token_id] for line in corpus]
    language_model = [*model.model.language_model.parameters(), *model.lm_head.parameters()]

    def loss_of_batch(indices: torch.Tensor) -> torch.Tensor:
        batch = [rows[i] for i in indices.tolist()]
        input_ids = _pad(batch, tokenizer.pad_token_id)
        attention_mask = _pad([[1] * len(row) for row in batch], 0)
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss

    model.train()
    loss = _train(
        "toy base (b) text",
        language_model,
        loss_of_batch,
        count=len(rows),
        batch_size=settings.text_batch_size,
        steps=settings.text_steps,
        lr=settings.text_lr,
        warmup=settings.warmup,
        generator=generator,
        progress=progress,
    )
    return {"loss": loss}


def _chat_ids(processor: ProcessorMixin, samples: Sequence[Sample]) -> list[tuple[list[int], int]]:
    """Each sample's full chat as token ids (image tokens expanded) and its prompt's length.

    The text comes from the processor's chat template and the ids from the
    processor itself, as at generation time. Toy chats repeat (a few hundred
    distinct ones), so each distinct chat is tokenized once.
    """
    from PIL import Image

    blank = Image.new("RGB", (8, 8))  # the number of image tokens does not depend on content
    cache: dict[tuple[str, str], tuple[list[int], int]] = {}
    rows: list[tuple[list[int], int]] = []
    for sample in samples:
        key = (json.dumps(sample.prompt), sample.response)
        if key not in cache:
            prompt = processor.apply_chat_template(
                chat_messages(sample.prompt, with_image=True), add_generation_prompt=True
            )
            full = processor.apply_chat_template(
                chat_messages(
                    [*sample.prompt, {"role": "assistant", "content": sample.response}],
                    with_image=True,
                )
            )
            prompt_ids, full_ids = processor(
                text=[prompt, full], images=[blank, blank], add_special_tokens=False
            )["input_ids"]
            if list(full_ids[: len(prompt_ids)]) != list(prompt_ids):
                raise ConfigError(
                    f"sample {sample.id}: the chat template does not extend the prompt"
                )
            cache[key] = (list(full_ids), len(prompt_ids))
        rows.append(cache[key])
    return rows


def _stage_sft(
    model: LlavaForConditionalGeneration,
    processor: ProcessorMixin,
    world: ToyWorld,
    settings: BaseModelSettings,
    generator: torch.Generator,
    progress: bool,
) -> dict[str, Any]:
    """(c) Visual instruction tuning of the projector and the language model (tower frozen)."""
    import torch

    samples = list(world.samples("sft"))
    scenes: dict[str, int] = {}
    first_of_scene: list[Sample] = []
    for sample in samples:
        if sample.image not in scenes:
            scenes[sample.image or ""] = len(scenes)
            first_of_scene.append(sample)
    pixels = _pixel_values(processor, world, first_of_scene)
    scene_of = torch.tensor([scenes[sample.image or ""] for sample in samples])
    rows = _chat_ids(processor, samples)
    pad = processor.tokenizer.pad_token_id
    trainable = [
        *model.model.multi_modal_projector.parameters(),
        *model.model.language_model.parameters(),
        *model.lm_head.parameters(),
    ]

    def loss_of_batch(indices: torch.Tensor) -> torch.Tensor:
        batch = [rows[i] for i in indices.tolist()]
        input_ids = _pad([ids for ids, _ in batch], pad)
        attention_mask = _pad([[1] * len(ids) for ids, _ in batch], 0)
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        for row, (_, prompt_length) in enumerate(batch):
            labels[row, :prompt_length] = IGNORE_INDEX
        return model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixels[scene_of[indices]],
            labels=labels,
        ).loss

    model.train()
    model.model.vision_tower.eval()
    loss = _train(
        "toy base (c) sft",
        trainable,
        loss_of_batch,
        count=len(samples),
        batch_size=settings.sft_batch_size,
        steps=settings.sft_steps,
        lr=settings.sft_lr,
        warmup=settings.warmup,
        generator=generator,
        progress=progress,
    )
    model.eval()
    return {"loss": loss}


# --- the build -------------------------------------------------------------------------


def build_base_model(
    world_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    progress: bool = True,
    **settings: Any,
) -> Path:
    """Train the toy world's biased base model from scratch and save it as a checkpoint.

    Args:
        world_dir: a world written by `bpo.toy.world.write_world`.
        out_dir: the checkpoint folder to write (created).
        seed: seeds the weights and the batch order; with the same world, seed,
            settings, torch build and thread count, the weights come out bit for bit
            the same.
        progress: show a progress bar per stage.
        **settings: overrides of `BaseModelSettings` fields, e.g. ``sft_steps=100``.

    Returns:
        `out_dir`, loadable with ``AutoModelForImageTextToText.from_pretrained`` and
        ``AutoProcessor.from_pretrained``. Besides the checkpoint it holds
        ``toy_base.json`` (written last): the settings, the world fingerprint, the probe
        accuracy of the frozen encoder, the final losses and the seconds of each stage.
        If `out_dir` already holds a finished build with the same seed, world and
        settings, it is returned as it is.

    Raises:
        ConfigError: no world in `world_dir`, an unknown setting, or `out_dir` not a folder.
    """
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    world = ToyWorld.load(world_dir)
    options = base_model_settings(**settings)
    target = Path(out_dir)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"base-model output {target} exists and is not a folder")
    if built_from(target) == (seed, world.fingerprint, asdict(options)):
        return target  # a finished build of the same model: a pipeline resumes here

    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            with tempfile.TemporaryDirectory(prefix="bpo-toy-base-") as scratch:
                sizes = {name: getattr(options, name) for name in _TINY_MODEL_FIELDS}
                build_tiny_model(
                    "llava",
                    scratch,
                    seed=seed,
                    image_size=world.spec.image_size,
                    patch_size=options.patch_size,
                    **sizes,
                )
                model = LlavaForConditionalGeneration.from_pretrained(scratch)
                processor = AutoProcessor.from_pretrained(scratch)
            # Read the last vision layer: with a 3-layer tower, LLaVA-1.5's -2 would
            # leave a layer unused.
            model.config.vision_feature_layer = -1
            report: dict[str, Any] = {}
            for name, stage in (
                ("vision", _stage_vision),
                ("text", _stage_text),
                ("sft", _stage_sft),
            ):
                start, cpu = time.perf_counter(), time.process_time()
                report[name] = stage(model, processor, world, options, generator, progress)
                report[name]["seconds"] = round(time.perf_counter() - start, 1)
                # CPU seconds of all threads: comparable across runs on a busy machine.
                report[name]["cpu_seconds"] = round(time.process_time() - cpu, 1)
    finally:
        torch.set_num_threads(threads)

    model.generation_config.max_new_tokens = 32
    model.config.bpo_toy_base = {"seed": seed, "world": world.fingerprint, **asdict(options)}
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    build = {
        "seed": seed,
        "world": world.fingerprint,
        "world_seed": world.seed,
        "settings": asdict(options),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "stages": report,
    }
    write_text(target / BUILD_FILE, json.dumps(build, indent=2) + "\n")  # last: the build is done
    return target


def built_from(checkpoint: str | os.PathLike[str]) -> tuple[int, str, dict[str, Any]] | None:
    """``(seed, world fingerprint, settings)`` of a finished base build, or None.

    Lets a pipeline check that a base model (the shipped one included) was trained
    on the world it is about to use.
    """
    try:
        build = json.loads((Path(checkpoint) / BUILD_FILE).read_text(encoding="utf-8"))
        return int(build["seed"]), str(build["world"]), dict(build["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def shipped_checkpoint() -> Path:
    """The base model shipped inside the package, so the demo need not train one.

    It is exactly ``build_base_model(write_world(dir, seed=0), out, seed=0)`` with
    the default sizes and settings (written by ``bench/toy_base.py
    --write-checkpoint``); its ``toy_base.json`` names the world fingerprint it was
    trained on. `bpo demo --from-scratch` rebuilds it with the code above.

    Raises:
        ConfigError: the package holds no checkpoint.
    """
    if not (SHIPPED_DIR / "model.safetensors").is_file():
        raise ConfigError(
            f"no toy base checkpoint in {SHIPPED_DIR}; build one with"
            " `python bench/toy_base.py --write-checkpoint` or run the demo with --from-scratch"
        )
    return SHIPPED_DIR
