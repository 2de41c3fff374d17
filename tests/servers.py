"""Starting servers in their own process: shared by the backend and eval tests."""

from __future__ import annotations

import queue
import subprocess
import threading
from pathlib import Path
from typing import IO


def wait_for_url(popen: subprocess.Popen[str], stderr_path: Path, timeout: float = 180) -> str:
    """The http:// URL from the first stdout line that has one; stdout is drained after."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(stream: IO[str]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    assert popen.stdout is not None
    threading.Thread(target=pump, args=(popen.stdout,), daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            popen.kill()
            raise RuntimeError(
                f"no URL within {timeout}s; stderr: {stderr_path.read_text()}"
            ) from None
        if line is None:
            raise RuntimeError(f"server exited ({popen.wait()}): {stderr_path.read_text()}")
        if "http://" in line:
            return line.strip().split()[-1]
