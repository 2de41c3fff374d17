"""Where a model comes from and whether bpo may load it: one decision for every loader.

Every ``from_pretrained`` of model weights in bpo (the hf and vllm backends, the
trained model, the export's base model and adapter) goes through `ModelSource`:

- The path is a local folder or a valid Hugging Face hub id; anything else (a
  file, ``''``, ``a/b/c``, a missing ``./path``) is a clear error naming it.
- Safetensors by default. Pickle-based weights (``pytorch_model.bin``,
  ``adapter_model.bin``, ``*.pt`` ...) can run code when unpickled, so a local
  folder that has only those is refused before anything is read, unless
  ``allow_pickle`` (``--allow-pickle``, recipe ``model.allow_pickle``). For hub
  ids, transformers' ``use_safetensors=True`` makes the same refusal.
- No code shipped with a checkpoint runs unless ``trust_remote_code`` is given: a
  folder whose ``config.json`` maps to custom classes (``auto_map``) that
  transformers has no built-in class for is refused with the flag to pass.
- Loading errors from transformers and the hub (offline, unknown repo) become one
  `ConfigError` line (`ModelSource.loading`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpo.errors import ConfigError

# Suffixes of pickle-based weight files: PyTorch's torch.save (.bin/.pt/.pth), Lightning
# (.ckpt), plain pickle. safetensors holds tensors only and cannot run code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# What a transformers Trainer writes next to the weights of a checkpoint (optimizer.pt,
# scheduler.pt, scaler.pt, rng_state*.pth, training_args.bin): pickles too, but never loaded
# as weights (resuming reads them through the Trainer, from bpo's own run folder).
TRAINER_STATE_PREFIXES = ("optimizer", "scheduler", "scaler", "rng_state", "training_args")
SAFE_SUFFIXES = (".safetensors", ".safetensors.index.json")

ALLOW_PICKLE_HINT = (
    "convert it to safetensors (load it once where you trust it and save_pretrained), or, "
    "if you trust the checkpoint, pass --allow-pickle (in a recipe: model.allow_pickle: true)"
)
REMOTE_CODE_HINT = (
    "pass --trust-remote-code (in a recipe: model.trust_remote_code: true) only if you trust it"
)


class UnsafeCheckpointError(ConfigError):
    """A checkpoint bpo loads only when asked: pickle-based weights, or code it ships."""


def resolve_model_path(model: str | os.PathLike[str]) -> str:
    """A local model folder or a valid Hugging Face hub id, as a string for ``from_pretrained``.

    Raises:
        ConfigError: for an empty name, a file, or a path that is neither an existing
            folder nor a hub id (``org/name``), naming the path.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = os.fspath(model)
    if not text.strip():
        # Path("") is ".", the current folder: an empty --model must not load whatever is here.
        raise ConfigError("no model given: pass a model folder or a hub id (org/name)")
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise ConfigError(f"model {text!r} is a file; expected a model folder or a hub id")
    try:
        validate_repo_id(text)
    except HFValidationError:
        raise ConfigError(
            f"model {text!r}: no such directory, and not a Hugging Face hub id (org/name)"
        ) from None
    return text


def is_trainer_state(name: str) -> bool:
    """Whether a file of a Trainer checkpoint is its state (optimizer, RNG ...), not weights."""
    return name.startswith(TRAINER_STATE_PREFIXES)


def is_pickle_weights(name: str) -> bool:
    """Whether a file name is a pickle-based weights file (not a Trainer's own state)."""
    return name.endswith(PICKLE_SUFFIXES) and not is_trainer_state(name)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: cannot read it as JSON: {error}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return value


def check_weights(folder: Path, *, allow_pickle: bool, adapter: bool = False) -> None:
    """Refuse a local checkpoint whose weights are pickle-based, unless `allow_pickle`.

    Args:
        folder: a model folder (``save_pretrained``) or, with `adapter`, a PEFT adapter folder.
        allow_pickle: load pickle-based weights when no safetensors file is there.
        adapter: check ``adapter_model.safetensors`` (what PEFT reads first) rather than a
            model's ``*.safetensors``.

    Raises:
        UnsafeCheckpointError: naming the pickle file found and how to allow it.
        ConfigError: when the folder holds no weights at all.
    """
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    if adapter:
        safe = "adapter_model.safetensors" in names
    else:
        safe = any(name.endswith(SAFE_SUFFIXES) for name in names)
    if safe or allow_pickle:
        return
    pickles = [name for name in names if is_pickle_weights(name)]
    what = "adapter" if adapter else "model"
    if pickles:
        raise UnsafeCheckpointError(
            f"{folder}: the {what} weights are pickle-based ({', '.join(pickles)}) and no "
            f"safetensors file is there; unpickling can run code, so bpo does not load it: "
            f"{ALLOW_PICKLE_HINT}"
        )
    expected = "adapter_model.safetensors" if adapter else "model.safetensors"
    raise ConfigError(f"{folder}: no {what} weights ({expected}) in this folder")


def check_remote_code(folder: Path, *, trust_remote_code: bool) -> None:
    """Refuse a local model folder that needs its own Python code, unless `trust_remote_code`.

    A ``config.json`` with an ``auto_map`` whose ``model_type`` transformers knows loads
    with the built-in classes (transformers ignores the shipped code then); one whose
    ``model_type`` it does not know can only load by running the shipped code.

    Raises:
        UnsafeCheckpointError: naming the code the checkpoint maps to and the flag to pass.
        ConfigError: when config.json is not a JSON object.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    config_path = folder / "config.json"
    if not config_path.is_file():  # nothing to map; the loader says what is missing
        return
    config = _read_json(config_path)
    auto_map = config.get("auto_map")
    if trust_remote_code or not auto_map or config.get("model_type") in CONFIG_MAPPING_NAMES:
        return
    targets = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
    code = ", ".join(sorted({str(t) for t in targets}))
    raise UnsafeCheckpointError(
        f"{folder}: the model ships its own Python code (config.json auto_map: {code}) for "
        f"model_type {config.get('model_type')!r}, which transformers has no class for; bpo "
        f"does not run it: {REMOTE_CODE_HINT}"
    )


def load_adapter(model: Any, folder: str | os.PathLike[str], *, allow_pickle: bool) -> Any:
    """`model` with the PEFT adapter of a local `folder`, safetensors only unless allowed.

    PEFT reads ``adapter_model.safetensors`` when it is there and falls back to
    ``adapter_model.bin`` (a pickle) with no option to refuse it, hence the check first.

    Raises:
        ConfigError: when `folder` is not an adapter folder or cannot be loaded.
        UnsafeCheckpointError: for pickle-based adapter weights not allowed.
    """
    from peft import PeftModel

    path = Path(folder)
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"{path}: no adapter_config.json; not a PEFT adapter folder")
    check_weights(path, allow_pickle=allow_pickle, adapter=True)
    try:
        return PeftModel.from_pretrained(model, str(path))
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"{path}: cannot load the adapter: {error}") from error


@dataclass(frozen=True)
class ModelSource:
    """A model to load, checked, with the ``from_pretrained`` options that keep it safe.

    Build it with `ModelSource.resolve`, then `load` a processor or tokenizer,
    `load_config`, and `load_model`; each turns loading errors into one `ConfigError`
    (`loading`, also for loaders of other libraries such as vLLM).
    """

    name: str
    path: str
    revision: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False

    @classmethod
    def resolve(
        cls,
        model: str | os.PathLike[str],
        *,
        revision: str | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        weights: bool = True,
    ) -> ModelSource:
        """Resolve `model` and, for a local folder, check it before anything loads.

        Args:
            model: a model folder or a hub id.
            revision: a hub branch, tag or commit.
            trust_remote_code: allow code shipped with the checkpoint.
            allow_pickle: allow pickle-based weights.
            weights: also check the weights (False when only a processor is loaded).

        Raises:
            ConfigError: for a path that cannot be a model (`resolve_model_path`).
            UnsafeCheckpointError: for pickle weights or shipped code not allowed.
        """
        path = resolve_model_path(model)
        source = cls(os.fspath(model), path, revision, trust_remote_code, allow_pickle)
        if source.is_local:
            check_remote_code(Path(path), trust_remote_code=trust_remote_code)
            if weights:
                check_weights(Path(path), allow_pickle=allow_pickle)
        return source

    @property
    def is_local(self) -> bool:
        return Path(self.path).is_dir()

    def config_kwargs(self) -> dict[str, Any]:
        """Options of ``from_pretrained`` for configs, processors and tokenizers."""
        return {"revision": self.revision, "trust_remote_code": self.trust_remote_code}

    def weights_kwargs(self) -> dict[str, Any]:
        """Options of a model's ``from_pretrained``: safetensors only unless pickle is allowed.

        ``use_safetensors=None`` (allowed) prefers safetensors and falls back to pickle.
        """
        return {**self.config_kwargs(), "use_safetensors": None if self.allow_pickle else True}

    def load(self, auto_class: Any, what: str, **kwargs: Any) -> Any:
        """``auto_class.from_pretrained`` for what holds no weights (processor, tokenizer)."""
        with self.loading(what):
            return auto_class.from_pretrained(self.path, **self.config_kwargs(), **kwargs)

    def load_config(self) -> Any:
        """The model's config, refused when it names pickle-based weights not allowed.

        A ``config.json`` may name its weights file (``transformers_weights``); transformers
        then loads that file whatever ``use_safetensors`` says, so it is checked here.
        """
        from transformers import AutoConfig

        config = self.load(AutoConfig, "config")
        named = getattr(config, "transformers_weights", None)
        if named is not None and not self.allow_pickle and not str(named).endswith(SAFE_SUFFIXES):
            raise UnsafeCheckpointError(
                f"model {self.name!r}: config.json names pickle-based weights "
                f"(transformers_weights: {named}); unpickling can run code, so bpo does not "
                f"load it: {ALLOW_PICKLE_HINT}"
            )
        return config

    def load_model(self, auto_class: Any, *, config: Any = None, **kwargs: Any) -> Any:
        """``auto_class.from_pretrained`` of the weights, safetensors only unless allowed.

        Args:
            auto_class: e.g. ``AutoModelForImageTextToText``.
            config: the config from `load_config` (loaded here when None).
            **kwargs: further options (``dtype``, ``attn_implementation`` ...).
        """
        if config is None:
            config = self.load_config()
        with self.loading("model"):
            return auto_class.from_pretrained(
                self.path, config=config, **self.weights_kwargs(), **kwargs
            )

    @contextmanager
    def loading(self, what: str = "model") -> Iterator[None]:
        """Turn what transformers, PEFT or the hub raise while loading into one clear error."""
        try:
            yield
        except (OSError, ValueError, KeyError, ImportError) as error:
            raise self._error(what, error) from error

    def _error(self, what: str, error: Exception) -> ConfigError:
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        if "trust_remote_code" in text and not self.trust_remote_code:
            return UnsafeCheckpointError(
                f"model {self.name!r}: its {what} needs code shipped with the checkpoint; "
                f"bpo does not run it: {REMOTE_CODE_HINT}"
            )
        if self.is_local:
            return ConfigError(f"model {self.name!r}: cannot load the {what}: {first}")
        if "cannot be loaded with `safetensors`" in text:
            return UnsafeCheckpointError(
                f"model {self.name!r}: the hub repo has no safetensors weights; {ALLOW_PICKLE_HINT}"
            )
        from huggingface_hub import constants

        offline = " (offline: HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        return ConfigError(
            f"model {self.name!r}: no such directory here, and the Hugging Face hub cannot provide "
            f"its {what}{offline}: {first}"
        )
