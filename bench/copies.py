"""Copies of the published letter (DESIGN.md §10) with 10,000 signatories: what they cost.

The copies are queued by the scheduler (bot.copies), not by the close transaction, so closing a
letter must take as long with `[letters].send_copies = true` as with `false`. Measured here:

- close: bot.campaign.close_and_announce of the letter with `--members` (10,000) signatories
  (state change, all seven formats, compilation, audit, announcements) in a transaction that is
  rolled back, alternately with send_copies false and true, `--repeat` times each;
- queue: the scheduler's copies pass (bot.copies.queue_copies) on the letter closed for real:
  one `dm_file` outbox row per signatory, BATCH per transaction, then the LetterCopies row and
  its audit event; the rows are deleted between repetitions;
- an idle pass: the same pass once every letter is settled (what every scheduler tick pays).

Setup (not timed) is bench/compile.py's: a generated roster imported for real, the example letter
posted to slack:C1, every signature inserted in bulk.

Targets (this bench's own, not §7's): close with copies on ≤ 1.25 × close with copies off (the
same work: anything above is noise on a shared machine); queuing 10,000 copies ≤ 10 s (the
scheduler's tick waits for it once per letter); an idle pass ≤ 50 ms.

    .venv/bin/python bench/copies.py [--members 10000] [--repeat 5]
        [--postgres-url postgresql+psycopg://USER@127.0.0.1:5432/DB]

Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from _common import table, verdict  # noqa: E402
from sqlalchemy import delete  # noqa: E402
from sqlmodel import Session, col, select  # noqa: E402

from bot import copies  # noqa: E402
from bot.campaign import close_and_announce  # noqa: E402
from bot.config import Settings, load_settings  # noqa: E402
from bot.db import Database  # noqa: E402
from bot.direct import DM_FILE  # noqa: E402
from bot.models import LetterCopies, OutboxMessage  # noqa: E402
from bot.models._types import utcnow  # noqa: E402
from bot.store import letters  # noqa: E402

CLOSE_RATIO_TARGET = 1.25
QUEUE_TARGET = 10.0  # seconds for 10,000 copies
IDLE_TARGET = 0.050  # seconds

_spec = importlib.util.spec_from_file_location("bench_compile", ROOT / "bench" / "compile.py")
assert _spec is not None and _spec.loader is not None
bench_compile = importlib.util.module_from_spec(_spec)
sys.modules["bench_compile"] = bench_compile  # its dataclasses look their module up
_spec.loader.exec_module(bench_compile)


def settings_for(db_url: str, work: Path, *, send_copies: bool) -> Settings:
    return load_settings(
        None,
        {
            "database": {"url": db_url},
            "letters": {"output_dir": str(work / "out"), "send_copies": send_copies},
            "coordinators": {"slack": [bench_compile.COORDINATOR]},
        },
    )


def timed_close(database: Database, settings: Settings, slug: str) -> float:
    """close_and_announce in a transaction that is rolled back; seconds until it returned."""
    with Session(database.engine, expire_on_commit=False) as session:
        letter = letters.get_letter(session, slug=slug)
        assert letter is not None
        started = time.perf_counter()
        compilation = close_and_announce(
            session, settings=settings, letter=letter, actor="bench", now=utcnow()
        )
        session.flush()
        elapsed = time.perf_counter() - started
        assert compilation is not None
        session.rollback()
    return elapsed


def forget_copies(database: Database) -> None:
    with database.session() as session:
        session.execute(delete(OutboxMessage).where(col(OutboxMessage.kind) == DM_FILE))
        session.execute(delete(LetterCopies))


def run(args: argparse.Namespace, work: Path) -> bool:
    with bench_compile.database_url(work, args.postgres_url) as db_url:
        off = settings_for(db_url, work, send_copies=False)
        on = settings_for(db_url, work, send_copies=True)
        database = Database(db_url)
        try:
            build_args = argparse.Namespace(
                members=args.members, unsigned=0, pending=0, seed=2021,
                postgres_url=args.postgres_url,
            )  # fmt: skip
            letter = bench_compile.build(database, on, build_args)
            slug = letter.slug
            closes: dict[bool, list[float]] = {False: [], True: []}
            timed_close(database, on, slug)  # warm-up: templates, fonts, collator
            for run_number in range(args.repeat):
                order = (False, True) if run_number % 2 == 0 else (True, False)  # no favourite
                for send in order:
                    closes[send].append(timed_close(database, on if send else off, slug))
            with database.session() as session:
                found = letters.get_letter(session, slug=slug)
                assert found is not None
                close_and_announce(
                    session, settings=on, letter=found, actor="bench", now=utcnow()
                )
            queues: list[float] = []
            idles: list[float] = []
            for _ in range(args.repeat):
                forget_copies(database)
                started = time.perf_counter()
                queued = copies.queue_copies(database, settings=on, now=utcnow())
                queues.append(time.perf_counter() - started)
                assert queued == args.members, queued
                started = time.perf_counter()
                assert copies.queue_copies(database, settings=on, now=utcnow()) == 0
                idles.append(time.perf_counter() - started)
            with database.session() as session:
                (row,) = session.exec(select(LetterCopies)).all()
                assert row.count == args.members
        finally:
            database.dispose()
    report(args, closes, queues, idles)
    return check(args, closes, queues, idles)


def report(
    args: argparse.Namespace,
    closes: dict[bool, list[float]],
    queues: list[float],
    idles: list[float],
) -> None:
    backend = "PostgreSQL" if args.postgres_url else "SQLite"
    measured = [
        ("close, send_copies = false (rolled back)", closes[False]),
        ("close, send_copies = true (rolled back)", closes[True]),
        (f"queue {args.members} copies (batches of {copies.BATCH})", queues),
        ("idle copies pass (all settled)", idles),
    ]
    rows: list[list[Any]] = [
        [label, statistics.median(values) * 1000, _spread(values)] for label, values in measured
    ]
    print(f"{backend}, {args.members} signatories, {args.repeat} runs each")
    print(table(["measurement", "median ms", "min–max ms"], rows))


def check(
    args: argparse.Namespace,
    closes: dict[bool, list[float]],
    queues: list[float],
    idles: list[float],
) -> bool:
    med = statistics.median
    ratio = med(closes[True]) / med(closes[False])
    queue, idle = med(queues), med(idles)
    checks = [
        (f"close with copies on / off = {ratio:.2f} ≤ {CLOSE_RATIO_TARGET}", ratio),
        (f"queue {args.members} copies: {queue:.2f} s ≤ {QUEUE_TARGET:.0f} s", queue),
        (f"idle pass: {idle * 1000:.1f} ms ≤ {IDLE_TARGET * 1000:.0f} ms", idle),
    ]
    targets = [CLOSE_RATIO_TARGET, QUEUE_TARGET, IDLE_TARGET]
    ok = [value <= target for (_, value), target in zip(checks, targets, strict=True)]
    for (label, _), passed in zip(checks, ok, strict=True):
        print(f"{verdict(passed)}  {label}")
    return all(ok)


def _spread(values: list[float]) -> str:
    return f"{min(values) * 1000:.0f}–{max(values) * 1000:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=10_000, help="signatories (10000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (5)")
    parser.add_argument("--postgres-url", default=None, help="measure on PostgreSQL instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="cosign-bench-copies-") as tmp:
        ok = run(args, Path(tmp))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
