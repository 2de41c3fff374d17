"""What bpo prints on the console: messages, counts as text, one progress bar per stage.

Every command takes ``--quiet`` (errors and final results only) and ``--verbose``
(libraries' own logs and progress bars too); `configure` sets the level once,
from the CLI. Messages go to stderr, so a command's result on stdout (a table,
a path) can be piped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL

# Below --verbose, the libraries keep their progress bars ("Loading weights", datasets'
# "Map" and "Generating train split") and advisory logs to themselves: bpo shows one bar
# per stage. Environment variables, read when each library is imported (after this),
# so a user's own setting wins and `bpo --help` imports nothing.
_QUIET_LIBRARIES = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' loading bars follow huggingface_hub's
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
}


def configure(verbosity: int) -> None:
    """Set the console's verbosity for this process and the processes it starts."""
    global _level
    _level = verbosity
    if verbosity < VERBOSE:
        for name, value in _QUIET_LIBRARIES.items():
            os.environ.setdefault(name, value)
        import warnings

        # Library warnings that tell a bpo user nothing they can act on.
        for message in _NOISE:
            warnings.filterwarnings("ignore", message=message)
        import logging

        # DeepSpeed, when installed, is imported by the training stack in every run and logs
        # to stdout (its "DeepSpeed" logger, level reset on import, no variable to quiet
        # it): "Setting accelerator to CPU" at once, in --quiet too. A filter outlives that.
        logging.getLogger("DeepSpeed").addFilter(lambda record: record.levelno >= logging.ERROR)


# Regular expressions of library warnings filtered below --verbose (each seen in a bpo run).
_NOISE: tuple[str, ...] = (
    # transformers 5 deprecates the name PEFT and TRL still call (modeling_utils).
    r"`is_gradient_checkpointing` is deprecated",
)


def level() -> int:
    """The verbosity `configure` set: `QUIET`, `NORMAL` or `VERBOSE`."""
    return _level


def hide_bar(progress: bool = True) -> bool | None:
    """tqdm's ``disable`` for a bar: hidden without `progress` or under ``--quiet``, else
    shown on a terminal only (None), so a log file gets messages, not redrawn bars."""
    return True if not progress or _level == QUIET else None


def say(message: str) -> None:
    """Print a progress message to stderr, unless ``--quiet``."""
    if _level > QUIET:
        from tqdm import tqdm

        # Above a bar in flight, not glued to it: tqdm clears its line, prints, redraws.
        tqdm.write(message, file=sys.stderr)


def counts_text(counts: Mapping[str, int]) -> str:
    """``{"bad-image": 2, "bad-json": 1}`` as ``"3 (bad-image 2, bad-json 1)"``; zeros left out."""
    kept = {name: n for name, n in sorted(counts.items()) if n}
    total = sum(kept.values())
    if len(kept) == 1:
        return f"{total} ({next(iter(kept))})"
    return f"{total} ({', '.join(f'{name} {n}' for name, n in kept.items())})"


def close_bars() -> None:
    """End the line of any progress bar in flight, so what is printed next starts a line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        if not bar.disable:
            bar.refresh()
            bar.fp.write("\n")
            bar.fp.flush()
            bar.disable = True
