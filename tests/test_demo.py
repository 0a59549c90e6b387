"""`cosign demo`: the whole campaign, ending in the expected compiled letter."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from helpers import EXPECTED

from bot.demo import run_demo


def test_demo_compiles_the_expected_letter() -> None:
    out = io.StringIO()
    compiled = run_demo(out)
    assert compiled == EXPECTED.read_text(encoding="utf-8")
    text = out.getvalue()
    assert "47 members signed through the console" in text
    assert "the scheduler closed the letter and compiled 47 signatures" in text
    assert text.endswith(compiled)


def test_demo_command_writes_nothing_outside_a_temp_dir(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(EXPECTED.read_text(encoding="utf-8"))
    assert list(tmp_path.iterdir()) == []
