"""RSS of an idle cosign bot with console + Slack + Matrix and 10,000 signatures (DESIGN.md §7).

Builds a SQLite database in a temp dir with 10,000 members who all signed one letter, starts a
local fake Slack Web API (tests/fakeslack.py) and a throwaway Synapse (tests/synapse_server.py),
then runs the real `python -m bot run` with all three platforms enabled: the console on a pseudo
terminal (it only starts on a terminal), Slack over HTTP, Matrix with encryption on. Once it is
up it idles; RSS (VmRSS) and PSS of the bot and its command worker are sampled from /proc and
the maxima reported.

Baseline, measured in the same run: the same `python -m bot run` with no platform enabled and an
empty database (the interpreter, the libraries and the engine). The ratio shows what the
platforms and the 10,000 signatures add.

    .venv/bin/python bench/memory.py [--signatures 10000] [--idle 10]

Target: ≤ 200 MB for the full bot.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import subprocess
import sys
import tempfile
import time
from datetime import UTC, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _common import child_pids, clear_proxies, free_port  # noqa: E402
from fakeslack import DEFAULT_SECRET, FakeSlack  # noqa: E402
from synapse_server import SynapseServer, unique_localpart  # noqa: E402

from bot.db import Database  # noqa: E402
from bot.letterfile import parse_letter  # noqa: E402
from bot.models import Member, Signature  # noqa: E402
from bot.models._types import utcnow  # noqa: E402
from bot.store import letters  # noqa: E402

TARGET_MB = 200.0


def build_database(url: str, signatures: int) -> None:
    database = Database(url)
    database.upgrade()
    now = utcnow()
    source = parse_letter(
        (ROOT / "examples/interpol-2021.md").read_text(encoding="utf-8"), zone=UTC, now=now
    )
    with database.session() as session:
        letter = letters.create_letter(
            session, source=source, deadline=now + timedelta(days=7), actor="bench"
        )
        assert letter is not None and letter.id is not None
        letter.state = "open"
        people = [
            Member(
                member_id=f"m{i:05d}",
                given_name=f"Given{i}",
                family_name=f"Family{i}",
                post_nominals="MP",
                group=f"Country {i % 40}",
            )
            for i in range(signatures)
        ]
        session.add_all(people)
        session.flush()
        session.add_all(
            Signature(
                letter_pk=letter.id,
                member_pk=m.id,
                signed_at=now,
                via_platform="console",
                via_external_id=m.member_id,
                letter_version=letter.version,
            )
            for m in people
        )
    database.dispose()


def _kb(path: Path, field: str) -> float:
    for line in path.read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_mb(pid: int) -> tuple[float, float, float]:
    """(RSS of the bot process, RSS summed over it and its children, PSS summed over them).

    `cosign run` forks a command worker (bot/workers.py) that shares most pages with its parent:
    the RSS sum counts those pages twice, PSS (each shared page split between its users) once.
    """
    pids = [pid, *child_pids(pid)]
    rss = [_kb(Path(f"/proc/{p}/status"), "VmRSS:") for p in pids]
    pss = [_kb(Path(f"/proc/{p}/smaps_rollup"), "Pss:") for p in pids]
    return rss[0], sum(rss), sum(pss)


def run_idle(
    env: dict[str, str], cwd: Path, idle: float, ready: str, tty: bool
) -> tuple[float, float, float]:
    """Start `python -m bot run`, wait for `ready` in its log, idle; the maxima of memory_mb."""
    log = cwd / "bot.log"
    master = slave = None
    stdin: int | None = subprocess.DEVNULL
    if tty:
        master, slave = pty.openpty()
        stdin = slave
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "-v", "run"],
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=handle,
            stderr=handle,
        )
    try:
        deadline = time.monotonic() + 90
        while ready not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bot did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.2)
        samples = []
        end = time.monotonic() + idle
        while time.monotonic() < end:
            samples.append(memory_mb(process.pid))
            time.sleep(0.5)
        main_rss, rss_sum, pss_sum = zip(*samples, strict=True)
        return max(main_rss), max(rss_sum), max(pss_sum)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)


async def main(args: argparse.Namespace) -> None:
    clear_proxies()
    with tempfile.TemporaryDirectory(prefix="cosign-mem-") as tmp_name:
        tmp = Path(tmp_name)
        base_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }
        # Baseline: the engine alone (no platform), empty database.
        (tmp / "base").mkdir()
        baseline = await asyncio.to_thread(
            run_idle,
            {
                **base_env,
                "COSIGN_DATABASE__URL": f"sqlite:///{tmp / 'base/empty.db'}",
                "COSIGN_CONSOLE__ENABLED": "false",
            },
            tmp / "base",
            args.idle,
            "cosign running",
            False,
        )

        full = tmp / "full"
        full.mkdir()
        url = f"sqlite:///{full / 'cosign.db'}"
        started = time.monotonic()
        await asyncio.to_thread(build_database, url, args.signatures)
        print(f"built {args.signatures} signatures in {time.monotonic() - started:.1f} s")
        synapse = SynapseServer(tmp / "synapse")
        await asyncio.to_thread(synapse.start)
        try:
            bot_user = await asyncio.to_thread(synapse.register_user, unique_localpart("cosign"))
            async with FakeSlack() as fake:
                env = {
                    **base_env,
                    "COSIGN_DATABASE__URL": url,
                    "COSIGN_CONSOLE__ENABLED": "true",
                    "COSIGN_SLACK__ENABLED": "true",
                    "COSIGN_SLACK__MODE": "http",
                    "COSIGN_SLACK__PORT": str(free_port()),
                    "COSIGN_SLACK__API_URL": fake.api_url,
                    "SLACK_BOT_TOKEN": fake.token,
                    "SLACK_SIGNING_SECRET": DEFAULT_SECRET,
                    "COSIGN_MATRIX__ENABLED": "true",
                    "COSIGN_MATRIX__HOMESERVER": synapse.base_url,
                    "COSIGN_MATRIX__USER_ID": bot_user.user_id,
                    "COSIGN_MATRIX__DEVICE_ID": bot_user.device_id,
                    "COSIGN_MATRIX__STORE_PATH": str(full / "matrix-store"),
                    "COSIGN_MATRIX__ENCRYPTION": "true",
                    "MATRIX_ACCESS_TOKEN": bot_user.access_token,
                    "MATRIX_PICKLE_KEY": "bench-pickle-key",
                }
                # The fake and Synapse run in this process and its child: keep serving them.
                peak = await asyncio.to_thread(
                    run_idle, env, full, args.idle, "cosign running", True
                )
                log = (full / "bot.log").read_text(errors="replace")
                platforms = [
                    p for p in ("console", "slack", "matrix") if f"platform {p} started" in log
                ]
        finally:
            await asyncio.to_thread(synapse.stop)
    print()
    print(f"{'process (and its command worker)':<52}{'bot RSS':>10}{'RSS sum':>10}{'PSS sum':>10}")
    for label, (rss, rss_sum, pss_sum) in (
        ("baseline: engine alone, empty database", baseline),
        (f"cosign: {'+'.join(platforms)}, {args.signatures} signatures", peak),
    ):
        print(f"{label:<52}{rss:>7.1f} MB{rss_sum:>7.1f} MB{pss_sum:>7.1f} MB")
    print(f"ratio cosign / baseline (RSS sum): {peak[1] / baseline[1]:.2f}")
    # The verdict takes the PSS sum: the memory the bot and its worker hold, shared pages once.
    # The RSS sum counts the pages the forked worker shares with its parent twice.
    verdict = "PASS" if peak[2] <= TARGET_MB and len(platforms) == 3 else "MISS"
    print(
        f"target ≤ {TARGET_MB:.0f} MB with all three platforms (PSS of bot + worker; the bot "
        f"process alone {peak[0]:.0f} MB RSS): {verdict}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signatures", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to idle and sample")
    asyncio.run(main(parser.parse_args()))
