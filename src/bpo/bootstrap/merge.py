"""Joining sharded bootstrap outputs (``bpo merge``): shards of one run, each id once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bpo.bootstrap.runner import log_path, negatives_provenance
from bpo.data.jsonl import JsonlWriter, iter_jsonl
from bpo.errors import ConfigError, RecordError
from bpo.provenance import differences, file_record


def merge_outputs(
    inputs: list[str | os.PathLike[str]], out: str | os.PathLike[str]
) -> tuple[int, int]:
    """Join sharded bootstrap outputs (and their logs) into one, each id once.

    Records are copied in input order; an id already written is skipped (the
    first copy wins), so merging is idempotent and can be resumed. The inputs
    must have been made with the same settings (their records are compared,
    and an existing `out` must hold the same), which `out` then records too.

    Returns:
        (records written, duplicates skipped).

    Raises:
        ConfigError: for a missing input, or inputs (or `out`) made with other settings.
    """
    missing = sorted(str(path) for path in inputs if not Path(path).exists())
    if missing:
        raise ConfigError(f"no such file: {', '.join(missing)}")
    settings: dict[str, Any] | None = None
    for path in inputs:
        recorded = negatives_provenance(path, {}).recorded()
        if recorded is None:
            raise ConfigError(
                f"{path} has no settings record ({file_record(path).name}): "
                "was it written by bpo bootstrap?"
            )
        if settings is None:
            settings, first = recorded["settings"], path
            continue
        changed = differences(settings, recorded["settings"])
        if changed:
            raise ConfigError(
                f"{path} was made with other settings than {first}: {'; '.join(changed)}; "
                "only shards of one run can be merged"
            )
    provenance = negatives_provenance(out, settings or {})
    provenance.check()
    written = skipped = 0
    for source, target in ((inputs, out), ([log_path(p) for p in inputs], log_path(out))):
        present = [Path(p) for p in source if Path(p).exists()]
        if not present:
            continue
        with JsonlWriter(target, before_first_write=provenance.commit) as writer:
            for path in present:
                for line_number, value in iter_jsonl(path):
                    if not isinstance(value, dict) or "id" not in value:
                        raise RecordError("line has no 'id'", path=path, line=line_number)
                    if target != out:
                        writer.write(value)
                    elif writer.write(value):
                        written += 1
                    else:
                        skipped += 1
    provenance.commit()
    return written, skipped
