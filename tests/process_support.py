"""Running `python -m bot run` as a real process, the way a service manager would."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bot_env(**overrides: str) -> dict[str, str]:
    """A clean environment: no proxies, console off (stdin is not a terminal anyway)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONUNBUFFERED": "1",
        "COSIGN_CONSOLE__ENABLED": "false",
    }
    env.update(overrides)
    return env


async def spawn_bot(env: dict[str, str], cwd: Path, log: Path) -> asyncio.subprocess.Process:
    handle = log.open("ab")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "-v",
        "run",
        cwd=str(cwd),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=handle,
        stderr=handle,
    )
    handle.close()
    return process


async def stop_bot(process: asyncio.subprocess.Process, *, kill: bool = False) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), timeout=30)
