"""What `bpo train` prints: one bar on a terminal, a line per log, a summary; no library noise."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.train.conftest import RECIPES, PairData

NOISE = ("{'loss'", "Loading weights", "Map:", "Generating train split", "Warning")


def command(tiny_llava_path: Path, pair_data: PairData, out: Path, *flags: str) -> list[str]:
    return [
        *(sys.executable, "-m", "bpo.cli", "train", "--config", str(RECIPES / "tiny.yaml")),
        f"model.name={tiny_llava_path}",
        f"data.pairs={pair_data.pairs}",
        f"data.image_root={pair_data.image_root}",
        *("--output-dir", str(out), *flags),
    ]


def on_a_terminal(argv: list[str]) -> str:
    """What a 100-column terminal shows at the end: each line's last redraw, escapes removed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    process = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    shown = [line.split("\r") for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(next((s for s in reversed(line) if s.strip()), "") for line in shown)


def check_lines_and_summary(text: str, run: Path) -> None:
    logs = [line for line in text.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in logs] == ["1/4", "2/4", "3/4", "4/4"], text
    assert all("loss" in line and "logp chosen" in line for line in logs)
    for noise in NOISE:
        assert noise not in text, noise
    summary = text[text.index("bpo train: done") :]
    for row in ("steps", "final loss", "reward accuracy", "reward margin", "log-prob chosen"):
        assert row in summary
    assert "→" in summary and str(run / "adapter") in summary


def test_on_a_terminal_one_bar_stays_with_the_log_lines_and_the_summary(
    tiny_llava_path: Path, pair_data: PairData, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    text = on_a_terminal(command(tiny_llava_path, pair_data, run))
    bars = [line for line in text.splitlines() if re.match(r"^[\w -]+: +\d+%\|", line)]
    assert len(bars) == 1 and bars[0].startswith("train: 100%"), text
    check_lines_and_summary(text, run)


def test_a_captured_run_is_short_and_has_no_bars(
    tiny_llava_path: Path, pair_data: PairData, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    done = subprocess.run(
        command(tiny_llava_path, pair_data, run), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    assert len(text.splitlines()) < 60 and "%|" not in text, text
    check_lines_and_summary(text, run)


def test_quiet_prints_only_the_result(
    tiny_llava_path: Path, pair_data: PairData, tmp_path: Path
) -> None:
    argv = command(tiny_llava_path, pair_data, tmp_path / "run", "--quiet")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr, done.stdout.strip()) == (
        0,
        "",
        str(tmp_path / "run" / "adapter"),
    )
