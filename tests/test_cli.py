import subprocess
import sys
import time

from bpo.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_help_is_fast():
    # A fresh interpreter: nothing heavy (torch, transformers) may load for --help.
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from bpo.cli import main; main(['--help'])"],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert "bootstrap" in result.stdout
    assert elapsed < 1.0, f"bpo --help took {elapsed:.2f}s"


def test_help_imports_nothing_heavy():
    code = (
        "import sys; from bpo.cli import make_parser; make_parser(); "
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'PIL', 'numpy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
