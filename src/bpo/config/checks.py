"""Checks of a loaded recipe's values, and the settings of it that shape a result."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from bpo.config.run_sections import Recipe
from bpo.errors import ConfigError


def check_recipe(
    recipe: Recipe, *, source: str = "recipe", origins: Mapping[str, str] | None = None
) -> None:
    """Range checks, and checks that span several keys (types are checked on loading).

    Args:
        recipe: the recipe.
        source: where its values came from (the YAML file), for error messages.
        origins: dotted key -> where that key was set instead (an override),
            so an error names the override rather than the file.

    Raises:
        ConfigError: naming the key, its value and where it was set.
    """
    origins = origins or {}

    def refuse(key: str, message: str) -> ConfigError:
        return ConfigError(f"{origins.get(key, source)}: {key} {message}")

    train, data, lora, boot = recipe.train, recipe.data, recipe.lora, recipe.bootstrap
    if train.loss_weights is not None and len(train.loss_weights) != len(train.loss_type):
        raise refuse(
            "train.loss_weights",
            f"has {len(train.loss_weights)} weights for {len(train.loss_type)} loss types",
        )
    positive: dict[str, float | None] = {
        "train.learning_rate": train.learning_rate,
        "train.beta": train.beta,
        "train.num_train_epochs": train.num_train_epochs,
        "train.max_grad_norm": train.max_grad_norm,
        "train.per_device_train_batch_size": train.per_device_train_batch_size,
        "train.gradient_accumulation_steps": train.gradient_accumulation_steps,
        "train.logging_steps": train.logging_steps,
        "train.save_steps": train.save_steps,
        "train.reference_batch_size": train.reference_batch_size,
        "train.select_k": train.select_k,
        "train.save_total_limit": train.save_total_limit,
        "lora.r": lora.r,
        "lora.alpha": lora.alpha,
        "data.max_length": data.max_length,
        "data.min_response_tokens": data.min_response_tokens,
        "data.num_proc": data.num_proc,
        "bootstrap.num_negatives": boot.num_negatives,
        "bootstrap.batch_size": boot.batch_size,
        "bootstrap.max_new_tokens": boot.max_new_tokens,
        "pairs.max_words": recipe.pairs.max_words,
        "eval.batch_size": recipe.eval.batch_size,
        "eval.max_new_tokens": recipe.eval.max_new_tokens,
        "rounds.count": recipe.rounds.count,
    }
    for key, value in positive.items():
        if value is not None and value <= 0:
            raise refuse(key, f"must be positive, got {value}")
    in_range: dict[str, tuple[float, float, float, bool]] = {
        # key: (value, low, high, high included)
        "lora.dropout": (lora.dropout, 0, 1, False),
        "train.warmup_ratio": (train.warmup_ratio, 0, 1, True),
        "train.weight_decay": (train.weight_decay, 0, float("inf"), True),
        "train.rpo_alpha": (train.rpo_alpha, 0, float("inf"), True),
        "train.image_conditional_weight": (train.image_conditional_weight, 0, float("inf"), True),
        "train.anchor_weight": (train.anchor_weight, 0, float("inf"), True),
        "bootstrap.temperature": (boot.temperature, 0, float("inf"), True),
        "bootstrap.top_p": (boot.top_p, 0, 1, True),
        "pairs.max_similarity": (recipe.pairs.max_similarity, 0, 1, True),
    }
    for key, (value, low, high, closed) in in_range.items():
        if not (low <= value and (value <= high if closed else value < high)):
            bound = "]" if closed else ")"
            raise refuse(key, f"must be in [{low:g}, {high:g}{bound}, got {value}")
    if boot.top_p == 0:
        raise refuse("bootstrap.top_p", "must be above 0, got 0.0")
    if train.max_steps == 0 or train.max_steps < -1:
        raise refuse(
            "train.max_steps",
            f"must be -1 (use num_train_epochs) or positive, got {train.max_steps}",
        )
    for name, ratio in recipe.pairs.mix.items():
        if ratio < 0:
            raise refuse("pairs.mix", f"ratio of {name!r} must be >= 0, got {ratio}")
    if train.select == "hardest" and not train.precompute_reference:
        raise refuse(
            "train.select",
            "hardest ranks pairs by the cached reference log-probs: it needs "
            "train.precompute_reference: true",
        )
    if (train.image_conditional_weight or train.anchor_weight) and train.trl.get("ld_alpha"):
        raise refuse(
            "train.image_conditional_weight",
            "and train.anchor_weight read the summed log-probs of the chosen answer: they do "
            "not combine with train.trl.ld_alpha",
        )
    if train.bf16 and train.fp16:
        raise refuse("train.fp16", "and train.bf16 cannot both be true")
    check_report_to(train.report_to, source=origins.get("train.report_to", source))


def result_settings(recipe: Recipe, sections: Sequence[str] | None = None) -> dict[str, Any]:
    """The recipe's settings that shape a stage's result, flat (``"train.beta": 0.1``).

    Fields marked ``result=False`` (see `doc`) are left out, so a resumed run may
    change them. Free-form mappings (``train.trl``, ``model.processor_kwargs``)
    are one value each: a key added inside one is a change of that setting.

    Args:
        recipe: the recipe.
        sections: the sections to include (default: all).
    """
    settings: dict[str, Any] = {}
    for section in fields(recipe):
        if sections is not None and section.name not in sections:
            continue
        config = getattr(recipe, section.name)
        for spec in fields(config):
            if spec.metadata.get("result", True):
                value = getattr(config, spec.name)
                settings[f"{section.name}.{spec.name}"] = value
    return settings


# Trackers whose pip package is not named after transformers' name for them; bpo's own
# extras where it has one. The others install as `pip install <name>`.
_TRACKER_PACKAGES = {
    "wandb": "'bpo[wandb]'",
    "tensorboard": "tensorboardX",
    "azure_ml": "azureml-core",
    "comet_ml": "comet-ml",
    "flyte": "flytekit",
}
# transformers' availability check of a tracker, where it is not is_<name>_available.
_AVAILABILITY_CHECKS = {
    "azure_ml": "is_azureml_available",
    "comet_ml": "is_comet_available",
    "flyte": "is_flytekit_available",
}


def check_report_to(
    report_to: Sequence[str], *, source: str = "recipe", installed: bool = False
) -> None:
    """Refuse `train.report_to` names that transformers does not know, in one line.

    The valid names are those of transformers' tracker registry
    (`transformers.integrations.integration_utils.INTEGRATION_TO_CALLBACK`), plus
    ``none`` and ``all``, which stand alone. An empty list (the default) returns at
    once, importing nothing, so loading a recipe stays fast.

    Args:
        report_to: the tracker names.
        source: where the recipe came from, for the message.
        installed: also refuse a tracker whose package is not installed, naming the
            pip command (`bpo.train.runner.dpo_config` asks this before any model loads;
            loading a recipe does not, so a run trained with wandb can still be
            exported where wandb is not installed).

    Raises:
        ConfigError: naming the bad value and the valid ones, or the missing package.
    """
    if not report_to:
        return
    from transformers.integrations import integration_utils

    known = list(integration_utils.INTEGRATION_TO_CALLBACK)
    valid = ["none", "all", *known]
    for name in report_to:
        if name not in valid:
            close = difflib.get_close_matches(name.lower(), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{source}: train.report_to: {name!r} is not a tracker{hint} "
                f"(valid: {', '.join(valid)})"
            )
    if len(report_to) > 1 and {"none", "all"} & set(report_to):
        raise ConfigError(
            f"{source}: train.report_to: none and all stand alone, got {list(report_to)}"
        )
    if not installed:
        return
    for name in report_to:
        check = getattr(
            integration_utils, _AVAILABILITY_CHECKS.get(name, f"is_{name}_available"), None
        )
        # None: none/all, or a transformers that renamed the check; its callback then
        # raises its own error when the trainer is built.
        if check is not None and not check():
            package = _TRACKER_PACKAGES.get(name, name)
            raise ConfigError(
                f"{source}: train.report_to: {name} is not installed; "
                f"pip install {package} (or remove it from train.report_to)"
            )
