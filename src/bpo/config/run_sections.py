"""The sections `bpo run` adds (samples, bootstrap, pairs, eval, rounds), and the whole `Recipe`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bpo.config.sections import DataConfig, LoraConfig, ModelConfig, TrainConfig, doc

if TYPE_CHECKING:
    from bpo.engine import EngineOptions


@dataclass
class SamplesConfig:
    """`bpo run`: the supervised samples whose gold answers are the chosen responses."""

    path: str = field(
        default="", metadata=doc("Samples file (LLaVA JSON, ShareGPT4V, BPO, JSONL).")
    )
    format: str = field(
        default="auto",
        metadata=doc("The file's format.", choices=("auto", "llava", "sharegpt4v", "bpo", "jsonl")),
    )
    image_root: str | None = field(
        default=None, metadata=doc("Folder the samples' image paths are relative to.")
    )
    on_error: str = field(
        default="raise",
        metadata=doc(
            "A bad record: stop (raise) or count it and go on (skip).",
            choices=("raise", "skip"),
            result=False,
        ),
    )


@dataclass
class BootstrapConfig:
    """`bpo run`: how rejected responses are bootstrapped (see `bpo bootstrap --help`)."""

    strategies: list[str] = field(
        default_factory=lambda: ["image-weakening", "cooccurrence"],
        metadata=doc(
            "Strategies to run, each into negatives/<name>.jsonl.",
            choices=("image-weakening", "llm-injection", "cooccurrence"),
        ),
    )
    num_negatives: int = field(default=1, metadata=doc("Negatives per sample and strategy."))
    seed: int = field(default=0, metadata=doc("Seed of the noise and the sampling."))
    batch_size: int = field(default=16, metadata=doc("Samples per generation batch.", result=False))
    backend: str = field(
        default="hf", metadata=doc("Generation backend.", choices=("hf", "openai", "vllm"))
    )
    base_url: str | None = field(default=None, metadata=doc("openai backend: the server URL."))
    device: str = field(default="cpu", metadata=doc("hf backend: device.", result=False))
    engine: str = field(
        default="local",
        metadata=doc(
            "Where bootstrap and eval batches run: local (this process) or ray (a pool of Ray "
            "Data actors, pip install 'bpo[ray]'); the outputs are the same.",
            choices=("local", "ray"),
            result=False,
        ),
    )
    replicas: int = field(default=1, metadata=doc("ray engine: actors in the pool.", result=False))
    gpus_per_replica: float = field(
        default=0.0, metadata=doc("ray engine: GPUs per actor (0: CPU).", result=False)
    )
    ray_address: str = field(
        default="local",
        metadata=doc(
            "ray engine: local (a cluster started here), auto (`ray start --head`'s) or an address.",
            result=False,
        ),
    )
    distortion: str = field(default="diffusion", metadata=doc("Image weakening (bpo distort)."))
    distortion_params: dict[str, Any] = field(
        default_factory=lambda: {"step": 500},
        metadata=doc("Its parameters, e.g. {step: 500} of 1000 diffusion steps."),
    )
    temperature: float = field(default=1.0, metadata=doc("Sampling temperature."))
    top_p: float = field(default=1.0, metadata=doc("Nucleus sampling."))
    max_new_tokens: int = field(default=256, metadata=doc("Longest negative, in tokens."))
    injection_model: str | None = field(
        default=None, metadata=doc("llm-injection: the text LLM (default: model.name).")
    )
    style: str = field(
        default="instruction",
        metadata=doc("llm-injection prompt style.", choices=("instruction", "few-shot")),
    )
    lexicon: str | None = field(
        default=None, metadata=doc("cooccurrence: a lexicon file extending COCO's objects.")
    )

    def engine_options(self) -> EngineOptions:
        """The engine keys as `bpo.engine.EngineOptions` (bpo run's bootstrap and eval)."""
        from bpo.engine import EngineOptions

        return EngineOptions(self.engine, self.replicas, self.gpus_per_replica, self.ray_address)


@dataclass
class PairsConfig:
    """`bpo run`: how negatives become pairs (see `bpo pairs --help`)."""

    max_words: int = field(default=350, metadata=doc("Longest response in words (release: 350)."))
    max_similarity: float = field(
        default=1.0, metadata=doc("Drop pairs more similar than this (1.0: only identical).")
    )
    require_absent_object: bool = field(
        default=False,
        metadata=doc("Keep only rejected responses naming an object absent from the chosen."),
    )
    mix: dict[str, float] = field(
        default_factory=dict, metadata=doc("Per-strategy ratios, e.g. {image-weakening: 1}.")
    )
    seed: int = field(default=0, metadata=doc("Seed of the mixing subsample."))


@dataclass
class EvalConfig:
    """`bpo run`: benchmarks run on the model before and after training (see `bpo eval --help`)."""

    chair: str | None = field(
        default=None, metadata=doc("CHAIR records (image, objects or meta.objects).")
    )
    pope: str | None = field(default=None, metadata=doc("A POPE question file or folder."))
    mmhal: str | None = field(
        default=None,
        metadata=doc("MMHal-Bench's response_template.json (needs eval.judge_model)."),
    )
    amber: str | None = field(
        default=None,
        metadata=doc("AMBER's data/ folder (annotations.json, relation.json, safe_words.txt)."),
    )
    amber_queries: str | None = field(
        default=None,
        metadata=doc("AMBER: the query file to ask (default: <eval.amber>/query/query_all.json)."),
    )
    objhal: str | None = field(
        default=None,
        metadata=doc("Object HalBench's obj_halbench_300_with_image.jsonl (needs COCO files)."),
    )
    hallusion: str | None = field(default=None, metadata=doc("HallusionBench.json."))
    coco_instances: list[str] = field(
        default_factory=list,
        metadata=doc("chair, objhal: COCO instances files (train2014 and val2014 are united)."),
    )
    coco_captions: list[str] = field(
        default_factory=list, metadata=doc("chair, objhal: COCO captions files.")
    )
    parser: str = field(
        default="reference",
        metadata=doc(
            "How yes/no answers (pope, amber, hallusion) and judge ratings (mmhal) are read.",
            choices=("reference", "robust"),
        ),
    )
    objects_from: str = field(
        default="lexicon",
        metadata=doc("objhal: objects found by bpo's lexicon or listed by the judge.",
                     choices=("lexicon", "judge")),
    )  # fmt: skip
    judge_model: str | None = field(
        default=None, metadata=doc("mmhal (and objhal with a judge): the judge model.")
    )
    judge_backend: str = field(
        default="openai",
        metadata=doc("The judge's backend.", choices=("openai", "hf", "vllm")),
    )
    judge_base_url: str | None = field(
        default=None, metadata=doc("openai judge: the server URL.", result=False)
    )
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata=doc("openai judge: the variable holding its key.", result=False),
    )
    image_root: str | None = field(
        default=None, metadata=doc("Folder of the benchmarks' images (default: samples').")
    )
    image_roots: dict[str, str] = field(
        default_factory=dict,
        metadata=doc("Per benchmark image folders, e.g. {amber: AMBER/image}.", result=False),
    )
    max_new_tokens: int | None = field(
        default=None, metadata=doc("Answer length (default: each benchmark's).")
    )
    batch_size: int = field(default=16, metadata=doc("Items per generation batch.", result=False))

    def benches(self) -> dict[str, str]:
        """The benchmarks the recipe asks for: ``{name: its file or folder}``, in run order."""
        from bpo.eval.recipe import EVAL_KEYS

        return {name: getattr(self, name) for name in EVAL_KEYS if getattr(self, name)}


@dataclass
class RoundsConfig:
    """`bpo run`: iterative BPO, each round bootstrapping from and training the last one's model."""

    count: int = field(
        default=1,
        metadata=doc(
            "Rounds of bootstrap, pairs, train, export and eval; 1: one run, no round-K/ "
            "folders. Raising it on a finished run goes on with the new rounds.",
            result=False,
        ),
    )
    reference: str = field(
        default="previous",
        metadata=doc(
            "Round K's DPO reference: the model it starts from (previous) or the recipe's "
            "model.name (base).",
            choices=("previous", "base"),
        ),
    )


@dataclass
class Recipe:
    """A whole recipe: one section per concern.

    `bpo train` reads model, data, lora and train; `bpo run` adds samples,
    bootstrap, pairs, eval and rounds, and fills data.pairs itself.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)

    def loss_types(self) -> tuple[list[str], list[float]]:
        """The TRL loss types and weights: ``rpo`` becomes ``sigmoid`` + ``sft`` weighted rpo_alpha.

        RPO (Pang et al. 2024, "Iterative Reasoning Preference Optimization") adds the
        length-normalised NLL of the chosen response to the DPO loss; TRL 1.16's
        ``sft`` loss is that term, so the pair of losses is RPO.
        """
        weights = self.train.loss_weights or [1.0] * len(self.train.loss_type)
        types_: list[str] = []
        expanded: list[float] = []
        for name, weight in zip(self.train.loss_type, weights, strict=True):
            if name == "rpo":
                types_ += ["sigmoid", "sft"]
                expanded += [weight, weight * self.train.rpo_alpha]
            else:
                types_.append(name)
                expanded.append(weight)
        return types_, expanded
