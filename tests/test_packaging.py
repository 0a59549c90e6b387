"""`pip install .` gives a working cosign: every subpackage, the templates and the examples ship.

The wheel is built offline from a copy of the checkout and installed into a throwaway venv that
borrows only the project's dependencies from this environment (a .pth line), so what the commands
import is the wheel's copy of bot, never the checkout.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import EXPECTED, ROOT

#: What `git clean -X` would remove, plus the venv: none of it belongs in a build.
BUILD_LITTER = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".*_cache",
    ".hypothesis", "out", "*.db", "*.db-wal", "*.db-shm", "matrix-store",
)  # fmt: skip
#: checkout directory -> where its files land in the wheel
SHIPPED = {
    "bot": "bot",
    "handlers": "handlers",
    "templates": "bot/templates",
    "examples": "bot/examples",
}


@dataclass(frozen=True)
class Installed:
    source: Path
    wheel: Path
    venv: Path
    env: dict[str, str]

    @property
    def cosign(self) -> str:
        return str(self.venv / "bin" / "cosign")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


def _pip(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("packaging")
    source, dist, venv = work / "source", work / "dist", work / "venv"
    shutil.copytree(ROOT, source, ignore=BUILD_LITTER)
    _pip("wheel", str(source), "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist))
    (wheel,) = dist.glob("cosign-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    _pip("--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", str(wheel))
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # The dependencies, from where this interpreter has them; .pth files found there (such as
    # the checkout's editable-install hook) are not processed, so they cannot leak the checkout.
    (purelib / "cosign-test-dependencies.pth").write_text(
        "".join(f"{path}\n" for path in site.getsitepackages()), encoding="utf-8"
    )
    env = {"PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    return Installed(source=source, wheel=wheel, venv=venv, env=env)


def _shipped_files(source: Path) -> set[str]:
    """Every file of the package and resource directories built from, as named in the wheel."""
    wanted: set[str] = set()
    for directory, target in SHIPPED.items():
        for path in (source / directory).rglob("*"):
            if path.is_file():
                wanted.add(f"{target}/{path.relative_to(source / directory).as_posix()}")
    return wanted


def test_the_wheel_holds_every_module_template_and_example(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = {name for name in wheel.namelist() if ".dist-info/" not in name}
    missing = _shipped_files(installed.source) - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    for expected in ("bot/models/__init__.py", "bot/store/__init__.py",
                     "bot/platforms/slack/__init__.py", "bot/platforms/matrix/__init__.py",
                     "bot/migrations/script.py.mako", "bot/templates/replies/help.j2",
                     "bot/examples/ipac-roster.csv"):  # fmt: skip
        assert expected in names
    assert not {name.split("/")[0] for name in names} - {"bot", "handlers"}, "stray top level"


def test_installed_cosign_imports_its_own_copy(installed: Installed, tmp_path: Path) -> None:
    modules = ["bot", "bot.cli", "bot.models", "bot.store", "bot.platforms.slack",
               "bot.platforms.matrix", "bot.templates", "bot.examples", "handlers"]  # fmt: skip
    script = (
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    print(importlib.import_module(name).__file__)\n"
    )
    result = subprocess.run(
        [installed.python, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=installed.env,
    )
    assert result.returncode == 0, result.stderr
    files = [Path(line) for line in result.stdout.splitlines()]
    assert len(files) == len(modules)
    for path in files:
        assert path.is_relative_to(installed.venv), f"{path} is not the installed copy"


def test_installed_cosign_help(installed: Installed, tmp_path: Path) -> None:
    result = subprocess.run(
        [installed.cosign, "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=installed.env,
    )
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout and "run" in result.stdout


def test_installed_cosign_demo_from_an_empty_directory(
    installed: Installed, tmp_path: Path
) -> None:
    result = subprocess.run(
        [installed.cosign, "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=installed.env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(EXPECTED.read_text(encoding="utf-8"))
    assert list(tmp_path.iterdir()) == []


def test_installed_cosign_run_starts_the_default_bot_and_stops_on_sigterm(
    installed: Installed, tmp_path: Path
) -> None:
    log = tmp_path.parent / f"{tmp_path.name}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [installed.cosign, "-v", "run"],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
            env=installed.env,
        )
    try:
        deadline = time.monotonic() + 60
        while "cosign running" not in log.read_text(encoding="utf-8", errors="replace"):
            assert process.poll() is None, log.read_text(encoding="utf-8", errors="replace")
            assert time.monotonic() < deadline, "cosign run did not start"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text(encoding="utf-8", errors="replace")
    assert "console platform skipped: stdin is not a terminal" in text
    assert "cosign running: scheduler only" in text
    assert "cosign stopped" in text
    assert (tmp_path / "cosign.db").is_file()
