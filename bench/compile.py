"""Compiling 10,000 signatories, their PDF, and `status` on 10,000 (DESIGN.md §7).

Targets: compile 10,000 signatories into txt+md+html, from a fresh process, ≤ 1 s; the PDF of
1,000 signatories ≤ 1 s and of 10,000 ≤ 10 s, from a fresh process; `status` on 10,000 ≤ 100 ms.

Setup (not timed): a migrated database (a SQLite file in a temp dir, or a throwaway schema on
--postgres-url) with a roster of `--members` (10,000) signed members plus `--unsigned` (500) who
have not signed, imported with the real roster import: varied, deterministic names with accents,
particles, hyphens, titles and post-nominals (some given in decomposed Unicode, which the import
normalises), in ~40 groups. One letter (examples/interpol-2021.md) is posted to slack:C1 and
every signed member's signature is inserted in bulk; `--pending` unknown accounts are pending.

From a fresh process, `--repeat` times (a new `python bench/_fresh_compile.py` each time; its
imports are not timed, everything after them is, measured inside it):

- compile (the verdict): open the database, build the UCA collator, load the letter and its
  10,000 signatories, render txt+md+html (bot.compile.render_formats) — what a fresh `cosign`
  process does to compile, templates loaded on first use included;
- close: open the database, build the collator, bot.store.letters.close_letter (loading, all
  seven formats — pdf and docx included —, the compilation row, the audit event, the receipt) in
  a transaction that is rolled back — what `cosign letter close` does;
- pdf (the PDF verdicts): open the database, build the collator, load the letter and 1,000 (every
  10th) or all 10,000 signatories, read the fonts' coverage and check every name against it,
  typeset the PDF with Typst (bot.pdf) — what `cosign compile SLUG --format pdf` does; the DOCX of
  the same signatories is timed after it, apart (no target).

In this process, for the breakdown, each `--repeat` times, median reported (and the spread):

- baseline: the same 10,000 "name (group)" lines sorted by plain `str` and joined with "\\n"
  (what any implementation must at least do); every other figure is also printed as a multiple
  of it;
- loading the signatories (bot.store.signatures.signatories: the query, ORM rows, render_name);
- render_letter for txt, md and html with the signatories already loaded, each alone and the
  three together (the compile target);
- the whole close path: bot.store.letters.close_letter in a transaction that is rolled back
  (state change, loading, all five formats, the compilation row, the audit event);
- status_view for a coordinator (names, not signed, pending) and for a member, the status reply
  rendered (render_reply of replies/status.j2, mrkdwn as Slack gets it), and the whole `status`
  command as a chat user runs it (Dispatcher.dispatch in its own transaction + render_reply).

Compiling sorts names by UCA collation keys (bot.names) kept in an LRU cache. In this process the
collator is already built (after setup the bench calls bot.serve.settle_heap, as `cosign run`
does once started: collator built, heap frozen for the garbage collector), so "cleared" runs clear
the LRU cache before every repetition (the first status after a running bot started) and "warm"
runs keep it (a running bot answering status again). `status` lists names by the filing keys
stored on each member, so it collates only the group names. Verdicts: compile and close on the
fresh-process figures; status on the "cleared" ones (a running bot answers status, and it built
the collator when it started).

    .venv/bin/python bench/compile.py [--members 10000] [--unsigned 500] [--pending 20]
        [--repeat 5] [--postgres-url postgresql+psycopg://USER@127.0.0.1:5432/DB]

It prints tables with PASS/MISS per target and exits 1 when any target is missed. It writes only
to a temp dir (and, with --postgres-url, to a schema it creates and drops).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _common import table, timed, verdict  # noqa: E402
from helpers import create_example_letter  # noqa: E402
from sqlalchemy import create_engine, insert, text  # noqa: E402
from sqlmodel import Session, select  # noqa: E402

from bot import names  # noqa: E402
from bot.compile import LETTER_FILES, render_letter  # noqa: E402
from bot.config import Settings, load_settings  # noqa: E402
from bot.core import Dispatcher, Invocation, Reply  # noqa: E402
from bot.db import Database  # noqa: E402
from bot.models import Identity, Letter, Member, Signature  # noqa: E402
from bot.models._types import utcnow  # noqa: E402
from bot.names import Signatory  # noqa: E402
from bot.platforms.base import render_reply  # noqa: E402
from bot.roster import import_roster  # noqa: E402
from bot.serve import settle_heap  # noqa: E402
from bot.status import status_view  # noqa: E402
from bot.store import letters, members, signatures  # noqa: E402
from bot.store.letters import letter_text  # noqa: E402
from handlers import REGISTRY  # noqa: E402

COMPILE_TARGET = 1.0  # seconds, txt+md+html
# Closing also typesets the PDF and the DOCX (DESIGN.md §10), whose own target for 10,000 is 10 s;
# close must still hold the letter's lock (on SQLite the database's write lock) only briefly.
CLOSE_TARGET = 2.0  # seconds, all seven formats; not a §7 target, this bench's own bound
PDF_TARGETS = {1_000: 1.0, 10_000: 10.0}  # signatories: seconds, from a fresh process
STATUS_TARGET = 0.100  # seconds
COORDINATOR = "UADMIN"
CHANNEL = "C1"

GROUPS = [
    "Argentina", "Australia", "Belgique/België", "Bosnia i Hercegovina", "Canada", "Česko",
    "Côte d'Ivoire", "Curaçao", "Danmark", "Deutschland", "Eesti", "España", "European Union",
    "France", "Hrvatska", "Ísland", "India", "Ireland / Éire", "Italia", "Japan", "Latvija",
    "Lietuva", "Magyarország", "México", "Nederland", "New Zealand / Aotearoa", "Norge",
    "Österreich", "Polska", "Portugal", "România", "São Tomé e Príncipe", "Slovensko",
    "Slovenija", "Suomi", "Sverige", "Schweiz/Suisse", "Türkiye", "United Kingdom",
    "United States", "Việt Nam", "Ελλάδα",
]  # fmt: skip
GIVEN = [
    "Åsa", "Ægir", "Agnė", "Alejandro", "Ana María", "André", "Anaïs", "Ángel", "Anne-Sophie",
    "Arnaud", "Barbora", "Beñat", "Björn", "Bohdan", "Çağla", "Chloé", "Claudia", "Dáithí",
    "Đorđe", "Dóra", "Eamon", "Éléonore", "Emre", "Erik", "Eszter", "Fátima", "François",
    "Gérald", "Grzegorz", "Günther", "Hélène", "Henrik", "Ignacio", "Ilze", "Ioana", "Jan",
    "Jiří", "João", "José", "Jürgen", "Karin", "Kārlis", "Krzysztof", "Léa", "Łukasz",
    "Maëlle", "Małgorzata", "Marek", "María José", "Mikael", "Niamh", "Noémi", "Ólafur",
    "Øystein", "Pál", "Paweł", "Pierre-Yves", "Radek", "Raphaël", "Róisín", "Sébastien",
    "Şeyma", "Siobhán", "Søren", "Štěpán", "Þóra", "Tomáš", "Uğur", "Vilém", "Wojciech",
    "Xosé", "Yolanda", "Zdeněk", "Zoë", "Žaneta", "Ömer", "Ülle", "Αλέξης", "Nguyễn Văn",
]  # fmt: skip
PARTICLES = ["", "", "", "", "", "", "van ", "van der ", "de ", "de la ", "von ", "d'", "O'", "Mac"]
ONSETS = [
    "B", "Br", "C", "Ch", "Č", "D", "Dv", "F", "G", "Gr", "H", "J", "K", "Kr", "L", "Ł", "M",
    "N", "Ö", "P", "R", "Ř", "S", "Sch", "Ś", "Š", "St", "T", "Th", "V", "W", "Z", "Ž", "Ż",
    "Á", "É", "Í", "Ø", "Å", "Ü", "Þ",
]  # fmt: skip
NUCLEI = ["a", "e", "i", "o", "u", "á", "é", "ě", "í", "ó", "ö", "ü", "ø", "å", "æ", "ą", "ę",
          "ô", "ã", "y", "ae", "ou", "ie"]  # fmt: skip
CODAS = ["", "n", "r", "l", "k", "s", "t", "ch", "ň", "ł", "ß", "nd", "rs", "st", "ž", "rz"]
ENDINGS = [
    "", "ová", "ski", "ská", "sen", "sson", "ović", "ić", "ez", "es", "ães", "çi", "oğlu",
    "nen", "berg", "mann", "ler", "escu", "aitė", "iene", "elli", "ini", "ou", "ová-Nováková",
    "dóttir", "sdóttir",
]  # fmt: skip
TITLES = ["", "", "", "", "Senator", "Hon", "Dr", "Prof.", "Lord", "Baroness", "Rt Hon", "Dame"]
POST_NOMINALS = ["", "", "", "MP", "MdB", "MEP", "TD", "MSP", "OBE", "KC", "Poslanec"]


def make_family(rng: random.Random) -> str:
    syllables = "".join(
        rng.choice(ONSETS).lower() + rng.choice(NUCLEI) + rng.choice(CODAS)
        for _ in range(rng.randint(1, 3))
    )
    stem = syllables[:1].upper() + syllables[1:] + rng.choice(ENDINGS)
    if rng.random() < 0.06:
        stem += "-" + make_family(rng)
    return rng.choice(PARTICLES) + stem


def roster_csv(count: int, unsigned: int, seed: int) -> tuple[str, list[str]]:
    """(CSV text, member_ids of the members who will sign)."""
    rng = random.Random(seed)
    header = "member_id,title,given_name,family_name,post_nominals,group,display_name,slack_id,role"
    lines = [header, f"coord,,Co,Ordinator,,,,{COORDINATOR},coordinator"]
    signers: list[str] = []
    for i in range(count + unsigned):
        given = rng.choice(GIVEN)
        family = make_family(rng)
        display = (
            f"{rng.choice(GIVEN)} {family}, {rng.choice(['MP', 'MEP'])}" if i % 53 == 0 else ""
        )
        if i % 7 == 0:  # as some spreadsheets export it: decomposed accents, NFC on import
            given, family = (
                unicodedata.normalize("NFD", given),
                unicodedata.normalize("NFD", family),
            )
        member_id = f"m{i:05d}"
        slack = f"UM{i:05d}" if i < 100 else ""
        fields = [
            member_id,
            rng.choice(TITLES),
            given,
            family,
            rng.choice(POST_NOMINALS),
            rng.choice(GROUPS),
            display,
            slack,
            "member",
        ]
        lines.append(",".join(_csv(f) for f in fields))
        if i < count:
            signers.append(member_id)
    return "\n".join(lines) + "\n", signers


def _csv(value: str) -> str:
    return f'"{value}"' if any(c in value for c in ',"') else value


# --------------------------------------------------------------------------- database


@contextmanager
def database_url(work: Path, postgres_url: str | None) -> Iterator[str]:
    """A SQLite file in the temp dir, or a throwaway schema on the given PostgreSQL server."""
    if not postgres_url:
        yield f"sqlite:///{work / 'cosign.db'}"
        return
    schema = f"cosign_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def build(database: Database, settings: Settings, args: argparse.Namespace) -> Letter:
    database.upgrade()
    data, signers = roster_csv(args.members, args.unsigned, args.seed)
    with database.session() as session:
        import_roster(session, data=data, actor="bench")
    letter = create_example_letter(
        database,
        settings,
        deadline=utcnow() + timedelta(days=3),
        post_to=[f"slack:{CHANNEL}"],
    )
    assert letter.id is not None
    rng = random.Random(args.seed + 1)
    now = utcnow()
    with database.session() as session:
        pks = dict(session.exec(select(Member.member_id, Member.id)).all())
        rows = [
            {
                "letter_pk": letter.id,
                "member_pk": pks[member_id],
                "signed_at": now - timedelta(seconds=rng.randint(0, 200_000)),
                "via_platform": rng.choice(["slack", "matrix", "console"]),
                "via_external_id": member_id,
                "via_event_id": "",
                "letter_version": letter.version,
            }
            for member_id in signers
        ]
        session.execute(insert(Signature), rows)
        for i in range(args.pending):
            members.add_pending(
                session,
                platform="slack",
                external_id=f"UP{i:05d}",
                display_name=f"Unknown Ünïcode {i}",
                channel=CHANNEL,
                letter_pk=letter.id,
            )
    if args.postgres_url:
        # Planner statistics, as autovacuum gathers them soon after a bulk load in production;
        # without them PostgreSQL picks nested loops over 10,000 rows.
        with database.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
    return letter


# --------------------------------------------------------------------------- measuring


@dataclass
class Row:
    name: str
    cold: list[float]  # LRU collation cache cleared before each run (collator already built)
    warm: list[float]
    size: str = ""


FRESH = Path(__file__).resolve().parent / "_fresh_compile.py"


def fresh(mode: str, db_url: str, repeat: int, *extra: str) -> list[dict[str, Any]]:
    """`repeat` runs of bench/_fresh_compile.py MODE, each a new process; their JSON results."""
    results = []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, str(FRESH), mode, db_url, "interpol-2021", *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{FRESH.name} {mode} exited {done.returncode}:\n{done.stderr}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def clear_collation_caches() -> None:
    names.collation_key.cache_clear()


def measure(fn: Callable[[], Any], repeat: int) -> tuple[list[float], list[float], Any]:
    """(cold timings, warm timings, result): cold clears the collation caches before each run."""
    cold: list[float] = []
    result: Any = None
    for _ in range(repeat):
        clear_collation_caches()
        started = time.perf_counter()
        result = fn()
        cold.append(time.perf_counter() - started)
    fn()  # fill the caches
    _, warm, result = timed(fn, repeat)
    return cold, warm, result


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(args: argparse.Namespace, work: Path) -> bool:
    started = time.perf_counter()
    names._collator = None
    collator_s = timed(names.collator, 1)[0]
    with database_url(work, args.postgres_url) as db_url:
        settings = load_settings(
            None,
            {
                "database": {"url": db_url},
                "letters": {"output_dir": str(work / "out")},
                "coordinators": {"slack": [COORDINATOR]},
            },
        )
        database = Database(db_url)
        try:
            letter = build(database, settings, args)
            settle_heap()  # as `cosign run` does once started (bot.serve.settle_heap)
            backend = "PostgreSQL" if args.postgres_url else "SQLite"
            print(
                f"{backend}: {args.members} signed + {args.unsigned} unsigned members in "
                f"{len(GROUPS)} groups, {args.pending} pending accounts; built in "
                f"{time.perf_counter() - started:.1f} s; UCA collator built in "
                f"{collator_s * 1000:.0f} ms in this process",
                flush=True,
            )
            fresh_compile = fresh("compile", db_url, args.repeat)
            fresh_close = fresh("close", db_url, args.repeat)
            checks = report_fresh(fresh_compile, fresh_close, args)
            checks += report_pdf(db_url, args)
            checks += measure_all(database, settings, letter, args)
        finally:
            database.dispose()
    print()
    for label, value, target in checks:
        print(f"{verdict(value <= target)}  {label}: {value * 1000:.0f} ms")
    return all(value <= target for _, value, target in checks)


def report_fresh(
    compiled: list[dict[str, Any]], closed: list[dict[str, Any]], args: argparse.Namespace
) -> list[tuple[str, float, float]]:
    """The fresh-process table; the compile and close checks."""
    for result in (*compiled, *closed):
        assert result["count"] == args.members, result
    steps = [("open", "open database"), ("collator", "build collator")]
    rows: list[list[object]] = []
    for label, results, parts in (
        ("compile txt+md+html", compiled, [*steps, ("load", "load"), ("render", "render")]),
        ("close_letter, 7 formats (rolled back)", closed, [*steps, ("close", "close")]),
    ):
        totals = [r["total"] for r in results]
        breakdown = ", ".join(f"{name} {med([r[key] for r in results]) * 1000:.0f}"
                              for key, name in parts)  # fmt: skip
        rows.append(
            [
                label,
                med(totals) * 1000,
                f"{min(totals) * 1000:.0f}–{max(totals) * 1000:.0f}",
                breakdown,
            ]
        )
    print()
    print(f"from a fresh process, {args.repeat} processes each; ms, imports not timed")
    print(table(["measurement", "median ms", "min–max ms", "median of each step, ms"], rows))
    return [
        (
            f"compile txt+md+html of {args.members} from a fresh process ≤ {COMPILE_TARGET:.0f} s",
            med([r["total"] for r in compiled]),
            COMPILE_TARGET,
        ),
        (
            f"close_letter of {args.members} (all 7 formats) from a fresh process ≤ "
            f"{CLOSE_TARGET:.0f} s",
            med([r["total"] for r in closed]),
            CLOSE_TARGET,
        ),
    ]


def report_pdf(db_url: str, args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """The PDF table (fresh processes, 1,000 and all signatories); the PDF checks."""
    rows: list[list[object]] = []
    checks: list[tuple[str, float, float]] = []
    for count in sorted({min(1_000, args.members), args.members}):
        results = fresh("pdf", db_url, args.repeat, str(count))
        assert all(r["count"] == count for r in results), results
        totals = [r["total"] for r in results]
        steps = ", ".join(
            f"{name} {med([r[key] for r in results]) * 1000:.0f}"
            for key, name in (("load", "open+collator+load"), ("fonts", "fonts+check"),
                              ("typeset", "typeset"))
        )  # fmt: skip
        size = results[0]["sizes"]
        rows.append(
            [
                f"pdf of {count}",
                med(totals) * 1000,
                f"{min(totals) * 1000:.0f}–{max(totals) * 1000:.0f}",
                steps,
                f"{size['pdf'] // 1024} KiB; docx {med([r['docx'] for r in results]) * 1000:.0f} "
                f"ms, {size['docx'] // 1024} KiB",
            ]
        )
        target = PDF_TARGETS.get(count, PDF_TARGETS[10_000] * count / 10_000)
        label = f"pdf of {count} from a fresh process ≤ {target:.0f} s"
        checks.append((label, med(totals), target))
    print()
    print(f"the PDF (Typst) from a fresh process, {args.repeat} processes each; imports not timed")
    headers = ["measurement", "median ms", "min–max ms", "median of each step, ms", "output"]
    print(table(headers, rows))
    return checks


def measure_all(
    database: Database, settings: Settings, letter: Letter, args: argparse.Namespace
) -> list[tuple[str, float, float]]:
    """The in-process breakdown table; the status checks."""
    assert letter.id is not None
    letter_pk = letter.id
    repeat = args.repeat
    rows: list[Row] = []

    with database.session() as session:
        stored = session.get(Letter, letter_pk)
        assert stored is not None
        text_view = letter_text(stored)
        member_asker = session.exec(
            select(Member)
            .join(Identity, Identity.member_pk == Member.id)  # type: ignore[arg-type]
            .where(Identity.external_id == "UM00001")
        ).one()
        people: list[Signatory] = signatures.signatories(session, letter_pk=letter_pk)
    assert len(people) == args.members, len(people)

    # Baseline: plain sort + join of the same lines.
    lines = [f"{s.name} ({s.group})" for s in people]
    base = timed(lambda: "\n".join(sorted(lines)), repeat)[1]
    rows.append(Row("baseline: sort 'name (group)' by str + join", base, base))

    def load() -> list[Signatory]:
        with database.session() as session:
            return signatures.signatories(session, letter_pk=letter_pk)

    cold, warm, _ = measure(load, repeat)
    rows.append(Row("load signatories (query + ORM + names)", cold, warm))

    outputs: dict[str, str] = {}
    for fmt in LETTER_FILES:

        def one(fmt: str = fmt) -> str:
            return render_letter(text_view, people, fmt)

        cold, warm, outputs[fmt] = measure(one, repeat)
        rows.append(Row(f"render_letter {fmt}", cold, warm, f"{len(outputs[fmt]) // 1024} KiB"))

    def three() -> list[str]:
        return [render_letter(text_view, people, fmt) for fmt in LETTER_FILES]

    compile_cold, compile_warm, _ = measure(three, repeat)
    rows.append(Row("render txt+md+html (3 separate renders)", compile_cold, compile_warm))

    def close() -> int:
        with Session(database.engine, expire_on_commit=False) as session:
            target = session.get(Letter, letter_pk)
            assert target is not None
            compilation = letters.close_letter(session, letter=target, actor="bench", at=utcnow())
            assert compilation is not None, "the letter was not open"
            count = compilation.signatory_count
            session.rollback()
        return count

    close_cold, close_warm, count = measure(close, repeat)
    assert count == args.members
    rows.append(Row("close_letter: load + 7 formats + store (rolled back)", close_cold, close_warm))

    def view(coordinator: bool) -> Any:
        with database.session() as session:
            target = session.get(Letter, letter_pk)
            assert target is not None
            asker = None if coordinator else session.get(Member, member_asker.id)
            return status_view(
                session,
                settings=settings,
                letter=target,
                asker=asker,
                coordinator=coordinator,
                now=utcnow(),
            )

    cold, warm, coord_view = measure(lambda: view(True), repeat)
    rows.append(Row("status_view, coordinator", cold, warm))
    cold, warm, _ = measure(lambda: view(False), repeat)
    rows.append(Row("status_view, member", cold, warm))
    reply = Reply(
        "replies/status.j2",
        {"view": coord_view, "known": False, "signed_at": None},
    )
    cold, warm, rendered = measure(lambda: render_reply(reply, "mrkdwn"), repeat)
    rows.append(Row("render status reply, coordinator", cold, warm, f"{len(rendered) // 1024} KiB"))

    dispatcher = Dispatcher(settings, database, REGISTRY)
    status_rows: dict[str, Row] = {}
    for who, user in (("coordinator", COORDINATOR), ("member", "UM00001")):
        invocation = Invocation(platform="slack", channel=CHANNEL, user=user, command="status")

        def command(invocation: Invocation = invocation) -> str:
            (answer,) = dispatcher.dispatch(invocation)
            assert answer.template == "replies/status.j2", answer
            return render_reply(answer, "mrkdwn")

        cold, warm, text_out = measure(command, repeat)
        row = Row(f"`status` command, {who} (dispatch + render)", cold, warm)
        row.size = f"{len(text_out) // 1024} KiB" if len(text_out) >= 1024 else f"{len(text_out)} B"
        status_rows[who] = row
        rows.append(row)

    baseline = med(base)
    print()
    print(
        f"in this process (collator built), median of {repeat} runs; cleared: the LRU "
        "collation cache cleared before each run; ×base = median cleared / median baseline"
    )
    print(
        table(
            ["measurement", "cleared ms", "warm ms", "min–max cleared ms", "×base", "output"],
            [
                [
                    r.name,
                    med(r.cold) * 1000,
                    med(r.warm) * 1000,
                    f"{min(r.cold) * 1000:.1f}–{max(r.cold) * 1000:.1f}",
                    med(r.cold) / baseline,
                    r.size,
                ]
                for r in rows
            ],
        )
    )
    return [
        (
            f"status on {args.members}, coordinator ≤ {STATUS_TARGET * 1000:.0f} ms "
            "(collation cache cleared)",
            med(status_rows["coordinator"].cold),
            STATUS_TARGET,
        ),
        (
            f"status on {args.members}, member ≤ {STATUS_TARGET * 1000:.0f} ms "
            "(collation cache cleared)",
            med(status_rows["member"].cold),
            STATUS_TARGET,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=10_000, help="signed members (10000)")
    parser.add_argument(
        "--unsigned", type=int, default=500, help="members who have not signed (500)"
    )
    parser.add_argument("--pending", type=int, default=20, help="pending unknown accounts (20)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (5)")
    parser.add_argument("--seed", type=int, default=2021, help="seed of the generated roster")
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="measure on PostgreSQL instead of SQLite (a schema is created and dropped)",
    )
    args = parser.parse_args()
    if args.members < 1 or args.repeat < 1 or args.unsigned < 0 or args.pending < 0:
        parser.error("--members and --repeat must be ≥ 1, --unsigned and --pending ≥ 0")
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="cosign-bench-compile-") as tmp:
        ok = run(args, Path(tmp))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
