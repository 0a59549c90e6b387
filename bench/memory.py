"""Idle memory of `cosign run` with console + Slack + Matrix and 10,000 signatures (DESIGN.md §7).

Target: the bot's processes together ≤ 200 MB, as the sum of PSS over the bot and its command
worker(s) with no other process sharing the venv; the sum of RSS is reported beside it.

Setup: a SQLite database in a temp dir with 10,000 members; the example letter created and posted
with the real CLI (`python -m bot letter post … --to console:#general --to slack:C1 --to
matrix:!room`), so it is open with a post queued on each platform; a local fake Slack Web API
(tests/fakeslack.py) and a throwaway Synapse (tests/synapse_server.py, an encrypted room the bot
has joined). Then the real `python -m bot run` with all three platforms enabled: the console on a
pseudo terminal (it only starts on a terminal), Slack over HTTP, Matrix with encryption on, the
scheduler and the forked command worker as in production. Before measuring, the bench checks that
the running bot has:

1. delivered the letter's three posts (each post has a message id);
2. after the 10,000 signatures are added (in bulk, while it runs), brought its Slack and Matrix
   posts to the count of 10,000 with its live counter;
3. answered a coordinator's `!status` on the console listing all 10,000 names (run, as every
   command, in the command worker).

Then it idles for `--idle` seconds while the bench samples, from /proc, PSS
(/proc/PID/smaps_rollup) and RSS (/proc/PID/status VmRSS) of the bot and its descendants; the
maxima are reported.

Why a second PSS figure: PSS splits each shared page between all the processes mapping it, so any
other process running from the same venv (this bench, Synapse, a test run next door) lowers the
bot's PSS by taking a share of the interpreter's and the libraries' pages. §7 asks for the figure
with no other process sharing the venv. As root the bench computes it exactly from
/proc/PID/pagemap and /proc/kpagecount: each page of the bot's processes is divided by the number
of its mappings left once the mappings held by processes that map files of the venv or of its
interpreter (and are not the bot's) are taken away. That figure ("PSS alone") is the verdict; the
PSS as read from smaps_rollup (lowered by those neighbours) is printed beside it. Without root
pagemap hides page frames, so the neighbours cannot be taken out; as this bench and Synapse are
always neighbours, the bench then reports MISS and says why.

Baseline, measured in the same run: the same `python -m bot run` with no platform enabled and an
empty database (the interpreter, the libraries, the engine and the command worker).

    .venv/bin/python bench/memory.py [--signatures 10000] [--idle 10]

Exits 1 when the target is missed (or could not be checked), 0 when it is met.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _common import child_pids, clear_proxies, free_port, verdict  # noqa: E402
from fakeslack import DEFAULT_SECRET, FakeSlack  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from synapse_server import SynapseServer, unique_localpart  # noqa: E402

from bot.db import Database  # noqa: E402
from bot.models import Member, Signature  # noqa: E402
from bot.models._types import utcnow  # noqa: E402

TARGET_MB = 200.0
SLUG = "interpol-2021"
LETTER_FILE = ROOT / "examples/interpol-2021.md"
SLACK_CHANNEL = "C1"
CONSOLE_CHANNEL = "#general"
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024
KPF_ZERO_PAGE = 1 << 24  # /proc/kpageflags: the shared zero page is not memory the bot holds
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63


# --------------------------------------------------------------------------- setup


def add_members(url: str, count: int) -> None:
    """`count` roster members (the ORM fills each one's filing key and printed name)."""
    database = Database(url)
    database.upgrade()
    with database.session() as session:
        session.add_all(
            Member(
                member_id=f"m{i:05d}",
                given_name=f"Given{i}",
                family_name=f"Family{i}",
                post_nominals="MP",
                group=f"Country {i % 40}",
            )
            for i in range(count)
        )
    database.dispose()


def add_signatures(url: str) -> int:
    """Every member signs the (open) letter, in one bulk insert; returns how many."""
    database = Database(url)
    now = utcnow()
    with database.engine.begin() as conn:
        letter_pk, version = conn.exec_driver_sql(
            "SELECT id, version FROM letter WHERE slug = ?", (SLUG,)
        ).one()
        members = conn.exec_driver_sql("SELECT id, member_id FROM member").all()
        conn.execute(
            insert(Signature),
            [
                {
                    "letter_pk": letter_pk,
                    "member_pk": pk,
                    "signed_at": now - timedelta(seconds=i),
                    "via_platform": "console",
                    "via_external_id": member_id,
                    "via_event_id": "",
                    "letter_version": version,
                }
                for i, (pk, member_id) in enumerate(members)
            ],
        )
    database.dispose()
    return len(members)


def cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    """Run `python -m bot ARGS` as an operator would; its stdout, or RuntimeError."""
    done = subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cosign {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def posts(db_file: Path) -> list[tuple[str, str | None, int | None]]:
    """(platform, message_id, shown_count) of the letter's posts, read-only."""
    with sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(
            "SELECT post.platform, post.message_id, post.shown_count FROM post "
            "JOIN letter ON letter.id = post.letter_pk WHERE letter.slug = ?",
            (SLUG,),
        ).fetchall()


# --------------------------------------------------------------------------- memory


def descendants(pid: int) -> list[int]:
    """pid and every live process below it (the command worker, and anything it forks)."""
    found = [pid]
    for child in child_pids(pid):
        found += descendants(child)
    return found


def _kb(path: Path, field: str) -> float:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Sample:
    """Memory of the bot's processes at one moment, MB."""

    bot_rss: float
    rss_sum: float
    pss_sum: float  # as smaps_rollup reports it: shared with any neighbour
    processes: int


def sample(pid: int) -> Sample:
    pids = descendants(pid)
    rss = [_kb(Path(f"/proc/{p}/status"), "VmRSS:") for p in pids]
    pss = [_kb(Path(f"/proc/{p}/smaps_rollup"), "Pss:") for p in pids]
    return Sample(rss[0], sum(rss), sum(pss), len(pids))


def venv_roots() -> tuple[str, ...]:
    """Files whose mapping makes a process a neighbour: the venv's and its interpreter's."""
    roots = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    return tuple(root.rstrip("/") + "/" for root in roots)


def _maps(pid: int) -> Iterator[tuple[int, int, str]]:
    """(start, end, path) of each mapping of a process ('' for anonymous ones)."""
    with open(f"/proc/{pid}/maps") as handle:
        for line in handle:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            yield start, end, fields[5].strip() if len(fields) > 5 else ""


def venv_neighbours(group: set[int], roots: tuple[str, ...]) -> list[int]:
    """Processes outside the bot's group mapping any file of the venv or its interpreter."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in group:
            continue
        try:
            if any(path.startswith(roots) for _, _, path in _maps(int(entry.name))):
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue  # gone, or a kernel thread
    return found


def _frames(pid: int, *, files_only: bool) -> Iterator[int]:
    """Page frame numbers of the present pages of a process (each mapping of a page once)."""
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap:
        for start, end, path in _maps(pid):
            if path == "[vsyscall]" or (files_only and not path.startswith("/")):
                continue
            try:
                pagemap.seek(start // PAGE * 8)
                entries = array("Q", pagemap.read((end - start) // PAGE * 8))
            except (OSError, ValueError, OverflowError):
                continue
            for entry in entries:
                if entry & PRESENT:
                    yield entry & PFN_MASK


class PagemapUnavailable(Exception):
    """Page frame numbers are hidden (not root) or /proc/kpagecount is not readable."""


def pss_alone_mb(pid: int) -> tuple[float, float, float, int]:
    """(PSS alone, PSS recomputed from kpagecount, each page once), MB, and the neighbour count.

    PSS alone: every page the bot's processes map, divided by its mappings minus those held by
    venv neighbours — the PSS the bot would have with no other process sharing the venv. The
    second figure (divided by all its mappings) checks the method against smaps_rollup.
    """
    group = descendants(pid)
    mine: Counter[int] = Counter()
    try:
        for p in group:
            mine.update(_frames(p, files_only=False))
    except PermissionError as exc:
        raise PagemapUnavailable(str(exc)) from exc
    if mine and not any(mine):
        raise PagemapUnavailable("pagemap shows no page frame numbers (needs CAP_SYS_ADMIN)")
    mine.pop(0, None)
    neighbours = venv_neighbours(set(group), venv_roots())
    theirs: Counter[int] = Counter()
    for p in neighbours:
        try:
            theirs.update(f for f in _frames(p, files_only=True) if f in mine)
        except OSError:
            continue  # gone meanwhile
    alone = shared = unique = 0.0
    try:
        counts = os.open("/proc/kpagecount", os.O_RDONLY)
        flags = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError as exc:
        raise PagemapUnavailable(str(exc)) from exc
    try:
        for frame, here in mine.items():
            if struct.unpack("Q", os.pread(flags, 8, frame * 8))[0] & KPF_ZERO_PAGE:
                continue
            total = struct.unpack("Q", os.pread(counts, 8, frame * 8))[0]
            total = max(total, here)  # the count moves while we read; never below our own
            shared += here / total
            alone += here / max(here, total - theirs[frame])
            unique += 1
    finally:
        os.close(counts)
        os.close(flags)
    return alone * PAGE / MB, shared * PAGE / MB, unique * PAGE / MB, len(neighbours)


@dataclass
class Measured:
    peak: Sample
    alone: float | None  # MB; None when pagemap is unavailable
    recomputed: float | None
    unique: float | None
    neighbours: int
    problem: str = ""


def measure_idle(pid: int, idle: float) -> Measured:
    """Sample for `idle` seconds; PSS alone at the start, middle and end (the maximum)."""
    samples: list[Sample] = []
    exact: list[tuple[float, float, float, int]] = []
    problem = ""
    checkpoints = [0.0, idle / 2, idle]
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        samples.append(sample(pid))
        if checkpoints and elapsed >= checkpoints[0] and not problem:
            checkpoints.pop(0)
            try:
                exact.append(pss_alone_mb(pid))
            except PagemapUnavailable as exc:
                problem = str(exc)
        if elapsed >= idle and not checkpoints:
            break
        time.sleep(0.5)
    peak = Sample(
        max(s.bot_rss for s in samples),
        max(s.rss_sum for s in samples),
        max(s.pss_sum for s in samples),
        max(s.processes for s in samples),
    )
    if not exact:
        neighbours = len(venv_neighbours(set(descendants(pid)), venv_roots()))
        return Measured(peak, None, None, None, neighbours, problem)
    best = max(exact)
    return Measured(peak, best[0], best[1], best[2], max(e[3] for e in exact))


# --------------------------------------------------------------------------- the bot


def wait_until(what: str, check: Callable[[], bool], log: Path, proc: subprocess.Popen[bytes],
               timeout: float) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the bot did not get there: {what}\n--- its log ends:\n{tail}")
        time.sleep(0.2)
    print(f"  ok: {what}", flush=True)


def run_bot(
    env: dict[str, str],
    cwd: Path,
    idle: float,
    tty: bool,
    prepare: Callable[[subprocess.Popen[bytes], Path, int | None], None] | None = None,
) -> Measured:
    """Start `python -m bot run`, wait until it runs, `prepare`, then measure it idling."""
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
        wait_until(
            "cosign running",
            lambda: "cosign running" in log.read_text(errors="replace"),
            log,
            process,
            90,
        )
        if prepare is not None:
            prepare(process, log, master)
        time.sleep(1.0)  # let the last reply's buffers go before sampling
        return measure_idle(process.pid, idle)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)


def campaign(db_file: Path, url: str, expected: int) -> Callable[
    [subprocess.Popen[bytes], Path, int | None], None
]:  # fmt: skip
    """What the running bot must do before it is measured (see the module docstring)."""

    def prepare(process: subprocess.Popen[bytes], log: Path, console: int | None) -> None:
        assert console is not None
        wait_until(
            "the letter's posts delivered to console, Slack and Matrix",
            lambda: len(posts(db_file)) == 3 and all(m for _, m, _ in posts(db_file)),
            log,
            process,
            60,
        )
        signed = add_signatures(url)
        assert signed == expected, (signed, expected)
        print(f"  added {signed} signatures to the open letter", flush=True)
        wait_until(
            f"live counter: the Slack and Matrix posts show {expected} signatures",
            lambda: all(c == expected for p, _, c in posts(db_file) if p != "console"),
            log,
            process,
            60,
        )
        before = log.stat().st_size
        os.write(console, f"!status {SLUG}\n".encode())
        last = f"Family{expected - 1}"

        def answered() -> bool:
            with log.open("rb") as handle:
                handle.seek(before)
                return last.encode() in handle.read()

        wait_until(
            f"console `!status {SLUG}` answered with all {expected} names",
            answered,
            log,
            process,
            60,
        )

    return prepare


# --------------------------------------------------------------------------- main


async def main(args: argparse.Namespace) -> int:
    clear_proxies()
    with tempfile.TemporaryDirectory(prefix="cosign-mem-") as tmp_name:
        tmp = Path(tmp_name)
        base_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }
        print("baseline: `python -m bot run`, no platform, empty database", flush=True)
        (tmp / "base").mkdir()
        baseline = await asyncio.to_thread(
            run_bot,
            {
                **base_env,
                "COSIGN_DATABASE__URL": f"sqlite:///{tmp / 'base/empty.db'}",
                "COSIGN_CONSOLE__ENABLED": "false",
            },
            tmp / "base",
            args.idle,
            False,
        )

        full = tmp / "full"
        full.mkdir()
        db_file = full / "cosign.db"
        url = f"sqlite:///{db_file}"
        print(f"cosign: console + Slack + Matrix, {args.signatures} signatures", flush=True)
        started = time.monotonic()
        await asyncio.to_thread(add_members, url, args.signatures)
        print(
            f"  {args.signatures} members in {time.monotonic() - started:.1f} s (setup)", flush=True
        )
        synapse = SynapseServer(tmp / "synapse")
        await asyncio.to_thread(synapse.start)
        try:
            owner = await asyncio.to_thread(synapse.register_user, unique_localpart("owner"))
            bot_user = await asyncio.to_thread(synapse.register_user, unique_localpart("cosign"))
            room = await asyncio.to_thread(
                synapse.create_room, owner.access_token, "letters", [bot_user.user_id],
                encrypted=True,
            )  # fmt: skip
            await asyncio.to_thread(synapse.join, bot_user.access_token, room)
            async with FakeSlack() as fake:
                env = {
                    **base_env,
                    "COSIGN_DATABASE__URL": url,
                    "COSIGN_LETTERS__OUTPUT_DIR": str(full / "out"),
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
                await asyncio.to_thread(
                    cli, env, full, "letter", "create", str(LETTER_FILE), "--deadline", "+7d"
                )
                await asyncio.to_thread(
                    cli, env, full, "letter", "post", SLUG,
                    "--to", f"console:{CONSOLE_CHANNEL}",
                    "--to", f"slack:{SLACK_CHANNEL}",
                    "--to", f"matrix:{room}",
                )  # fmt: skip
                # Fake Slack and Synapse are served by this process and its child meanwhile.
                full_run = await asyncio.to_thread(
                    run_bot, env, full, args.idle, True, campaign(db_file, url, args.signatures)
                )
                log = (full / "bot.log").read_text(errors="replace")
                platforms = [
                    p for p in ("console", "slack", "matrix") if f"platform {p} started" in log
                ]
        finally:
            await asyncio.to_thread(synapse.stop)
    return report(args, baseline, full_run, platforms)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} MB"


def report(
    args: argparse.Namespace, baseline: Measured, full: Measured, platforms: list[str]
) -> int:
    print()
    print(
        f"{'maxima while idle, bot + its descendants':<46}{'procs':>6}{'PSS alone':>12}"
        f"{'PSS smaps':>12}{'RSS sum':>12}{'bot RSS':>12}"
    )
    for label, m in (
        ("baseline: engine alone, empty database", baseline),
        (f"cosign: {'+'.join(platforms)}, {args.signatures} signatures", full),
    ):
        print(
            f"{label:<46}{m.peak.processes:>6}{_mb(m.alone):>12}{_mb(m.peak.pss_sum):>12}"
            f"{_mb(m.peak.rss_sum):>12}{_mb(m.peak.bot_rss):>12}"
        )
    print(
        "PSS alone: the verdict figure, PSS with the venv's other users' mappings taken away "
        f"({full.neighbours} such processes were running: this bench, Synapse, any others).\n"
        "PSS smaps: the sum of Pss from smaps_rollup, lowered by those neighbours.\n"
        "RSS sum: VmRSS summed; counts the pages the forked worker shares with the bot twice."
    )
    if full.recomputed is not None and full.unique is not None:
        print(
            f"check: PSS recomputed from pagemap/kpagecount {full.recomputed:.1f} MB "
            f"(smaps_rollup said {full.peak.pss_sum:.1f} MB); each page once {full.unique:.1f} MB"
        )
    if baseline.alone is not None and full.alone is not None:
        print(f"ratio cosign / baseline (PSS alone): {full.alone / baseline.alone:.2f}")
    print()
    if full.alone is None and full.neighbours > 0:
        figure, why = (
            None,
            (
                f"cannot take the venv's other users out ({full.problem}); "
                f"{full.neighbours} process(es) share it, so smaps PSS "
                f"({full.peak.pss_sum:.0f} MB) is understated: run as root"
            ),
        )
    else:
        figure = full.alone if full.alone is not None else full.peak.pss_sum
        why = f"{figure:.1f} MB PSS (RSS sum {full.peak.rss_sum:.1f} MB)"
    ok = figure is not None and figure <= TARGET_MB and len(platforms) == 3
    if len(platforms) != 3:
        why += f"; only {platforms} started"
    print(
        f"{verdict(ok)}  idle bot + worker(s), console+Slack+Matrix, {args.signatures} "
        f"signatures on a posted letter ≤ {TARGET_MB:.0f} MB PSS: {why}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signatures", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to idle and sample")
    sys.exit(asyncio.run(main(parser.parse_args())))
