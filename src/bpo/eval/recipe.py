"""`bpo run`'s eval section (`bpo.config.EvalConfig`) as the options of each benchmark run.

The recipe names each benchmark's file under its name (``eval.pope``,
``eval.amber`` ...); the settings they share (COCO files, the answer parser, the
judge) are keys of their own. `check_eval` refuses a section that cannot run
before any stage starts, so a missing judge does not surface after training.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpo.errors import ConfigError
from bpo.eval.runner import EvalOptions

if TYPE_CHECKING:
    from bpo.config import Recipe
    from bpo.config.run_sections import EvalConfig

# The recipe keys that name a benchmark's file, in the order they run.
EVAL_KEYS = ("chair", "pope", "mmhal", "amber", "objhal", "hallusion")


def check_eval(config: EvalConfig) -> None:
    """Refuse, before any stage runs, an eval section that cannot run."""
    benches = config.benches()
    needs_judge = "mmhal" in benches or ("objhal" in benches and config.objects_from == "judge")
    if needs_judge and not config.judge_model:
        raise ConfigError("eval.mmhal (and eval.objects_from=judge) need eval.judge_model")
    if needs_judge and config.judge_backend == "openai" and not config.judge_base_url:
        raise ConfigError("eval.judge_backend=openai needs eval.judge_base_url")
    if "objhal" in benches and not (config.coco_instances or config.coco_captions):
        raise ConfigError("eval.objhal needs eval.coco_instances and/or eval.coco_captions")
    unknown = sorted(set(config.image_roots) - set(benches))
    if unknown:
        raise ConfigError(f"eval.image_roots names benchmarks not run: {', '.join(unknown)}")


def eval_options(
    recipe: Recipe,
    bench: str,
    data: str,
    *,
    out: Path,
    model: str,
    judge_cache: Path,
    progress: bool = True,
) -> EvalOptions:
    """The `EvalOptions` of one benchmark of the recipe's eval section."""
    from bpo.backends import backend_options

    config = recipe.eval
    judge: dict[str, Any] = {}
    if config.judge_model and bench in ("mmhal", "objhal"):
        judge = {
            "judge_backend": config.judge_backend,
            "judge_model": config.judge_model,
            "judge_options": backend_options(
                config.judge_backend,
                base_url=config.judge_base_url,
                api_key_env=config.judge_api_key_env,
                device=recipe.bootstrap.device,
                batch_size=config.batch_size,
            ),
            # One cache for both models' runs: the same answers are never judged twice.
            "judge_cache": judge_cache,
        }
    return EvalOptions(
        bench=bench,
        out=out,
        # AMBER's entry is its data/ folder; the query file is another key.
        data=config.amber_queries if bench == "amber" else data,
        amber_dir=data if bench == "amber" else None,
        coco_instances=config.coco_instances,
        coco_captions=config.coco_captions,
        parser=config.parser,
        objects_from=config.objects_from,
        image_root=config.image_roots.get(bench) or config.image_root or recipe.samples.image_root,
        model=model,
        batch_size=config.batch_size,
        max_new_tokens=config.max_new_tokens,
        on_error=recipe.samples.on_error,
        progress=progress,
        **judge,
    )
