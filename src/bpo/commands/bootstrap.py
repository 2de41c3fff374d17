"""Bootstrap rejected responses for each sample, resumably.

Strategies:
  image-weakening  the VLM answers the sample's question on a distorted image
                   (--backend/--model: a VLM)
  llm-injection    a text LLM rewrites the gold answer with common but wrong
                   details (--backend/--model: a text model)
  cooccurrence     no model: objects that usually co-occur with those present
                   are inserted or substituted, counts and colours changed

Re-running the same command resumes: samples already done are skipped and no
negative id is written twice. --shard i/n splits the work; `bpo merge` joins.

Example:
  bpo bootstrap samples.json --strategy image-weakening --backend hf \\
      --model runs/tiny-llava --image-root images --out negatives.jsonl
"""

from __future__ import annotations

import argparse
from typing import Any

from bpo.bootstrap.strategies import STRATEGIES
from bpo.commands.options import (
    add_engine_options,
    add_image_root,
    add_model_options,
    add_on_error,
    backend_options,
    engine_options,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("samples", help="samples file (LLaVA JSON, ShareGPT4V, BPO release, JSONL)")
    parser.add_argument("--strategy", choices=STRATEGIES, required=True)
    parser.add_argument("--out", required=True, help="negatives JSONL (resumed if it exists)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT (and its log and summary) instead of resuming it; without it, a "
        "rerun with other settings is refused",
    )
    parser.add_argument("--format", default="auto", help="samples format (default: detect)")
    add_image_root(parser)
    add_on_error(parser)
    parser.add_argument("--num-negatives", type=int, default=1, help="negatives per sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16, help="samples per batch")
    parser.add_argument("--shard", default="0/1", help="i/n: handle every n-th sample from i")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_engine_options(parser)

    add_model_options(parser, title="model (image-weakening, llm-injection)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--temperature", type=float, default=1.0)
    sampling.add_argument("--top-p", type=float, default=1.0)
    sampling.add_argument("--max-new-tokens", type=int, default=256)

    weakening = parser.add_argument_group("image-weakening")
    weakening.add_argument("--distortion", default="diffusion", help="see `bpo distort`")
    weakening.add_argument("--step", type=int, default=500, help="diffusion step t of 1000")
    weakening.add_argument(
        "--distortion-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another distortion parameter (repeatable)",
    )

    injection = parser.add_argument_group("llm-injection and cooccurrence")
    injection.add_argument("--style", choices=("instruction", "few-shot"), default="instruction")
    injection.add_argument("--template", help="llm-injection: prompt template file")
    injection.add_argument("--lexicon", help="cooccurrence: object lexicon file extending COCO's")


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings to a dict, values read as int, float or string."""
    from bpo.errors import ConfigError

    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {pair!r}")
        value: Any = text
        for cast in (int, float):
            try:
                value = cast(text)
                break
            except ValueError:
                pass
        params[key] = value
    return params


def strategy_spec(args: argparse.Namespace) -> Any:
    """The `bpo.engine.work.StrategySpec` the flags name (built here or in each replica)."""
    from bpo.bootstrap.strategies import MODEL_STRATEGIES
    from bpo.engine.work import BackendSpec, StrategySpec

    backend = None
    if args.strategy in MODEL_STRATEGIES:
        options = backend_options(
            args.backend,
            args,
            base_url=args.base_url,
            api_key_env=args.api_key_env,
            batch_size=args.batch_size * args.num_negatives,
        )
        backend = BackendSpec(args.backend, args.model, options)
    return StrategySpec(args.strategy, strategy_options(args), backend)


def strategy_options(args: argparse.Namespace) -> dict[str, Any]:
    """The strategy's keywords of `make_strategy` and `strategy_settings`, from the flags."""
    params = {"step": args.step} if args.distortion == "diffusion" else {}
    params.update(parse_params(args.distortion_param))
    return {
        "distortion": args.distortion,
        "distortion_params": params,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "style": args.style,
        "template": args.template,
        "lexicon": args.lexicon,
    }


def preflight(args: argparse.Namespace) -> dict[str, Any]:
    """Every check that needs no model, before one loads; returns the run's settings.

    The output's settings record is compared (a rerun with other settings stops
    here), the first sample's image is looked for under --image-root, and the
    sampling values are range-checked.
    """
    from bpo.bootstrap.runner import negatives_provenance
    from bpo.bootstrap.strategies import MODEL_STRATEGIES, strategy_settings
    from bpo.errors import ConfigError

    for flag, value, ok in (
        ("--num-negatives", args.num_negatives, args.num_negatives >= 1),
        ("--batch-size", args.batch_size, args.batch_size >= 1),
        ("--temperature", args.temperature, args.temperature >= 0),
        ("--top-p", args.top_p, 0 < args.top_p <= 1),
        ("--max-new-tokens", args.max_new_tokens, args.max_new_tokens >= 1),
    ):
        if not ok:
            raise ConfigError(f"{flag} {value}: out of range (see bpo bootstrap --help)")
    if args.strategy in MODEL_STRATEGIES and not args.model:
        raise ConfigError(f"--strategy {args.strategy} needs --model")
    settings = strategy_settings(
        args.strategy,
        num_negatives=args.num_negatives,
        seed=args.seed,
        model=args.model,
        backend=args.backend,
        dtype=args.dtype,
        **strategy_options(args),
    )
    negatives_provenance(args.out, settings, overwrite=args.overwrite).check()
    if args.strategy == "image-weakening":
        from bpo.data.formats import read_samples
        from bpo.data.images import check_image_root
        from bpo.errors import ErrorPolicy

        quiet = ErrorPolicy(on_error="skip")
        samples = read_samples(args.samples, format=args.format, policy=quiet)
        check_image_root(((sample.id, sample.image) for sample in samples), args.image_root)
    return settings


def execute(args: argparse.Namespace) -> Any:
    """The command's work (`bpo.bootstrap(...)` calls it too); returns the `BootstrapSummary`."""
    from bpo.bootstrap.runner import Shard, run_bootstrap
    from bpo.errors import ErrorPolicy

    shard = Shard.parse(args.shard)
    engine = engine_options(args)
    settings = preflight(args)
    return run_bootstrap(
        args.samples,
        strategy_spec(args),
        args.out,
        image_root=args.image_root,
        format=args.format,
        num_negatives=args.num_negatives,
        seed=args.seed,
        batch_size=args.batch_size,
        shard=shard,
        policy=ErrorPolicy(on_error=args.on_error),
        progress=not args.no_progress,
        settings=settings,
        overwrite=args.overwrite,
        engine=engine,
    )


def run(args: argparse.Namespace) -> int:
    from bpo.console import say

    say(execute(args).describe(args.out))
    return 0
