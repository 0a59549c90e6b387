"""A close racing a burst of sign and unsign: every answer agrees with the compiled letter.

On PostgreSQL (READ COMMITTED) a `sign` that read the letter as open could commit after the close
had read the signatories: answered "You signed", missing from the letter. Signing now locks the
letter row (FOR SHARE) and re-reads its state under the lock; the close's UPDATE locks it too.
The close runs in a second process, as `cosign letter close` would.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import LETTER, create_example_letter

from bot.campaign import CampaignError, close_and_announce, extend_letter
from bot.config import Settings
from bot.core import Dispatcher, Invocation, Reply
from bot.db import Database
from bot.letterfile import parse_letter
from bot.models._types import utcnow
from bot.roster import import_roster
from bot.store import letters, members, signatures
from handlers import REGISTRY

MEMBERS = 3000
SIGNED_BEFORE = 2500  # members m00000 … m02499 have signed when the burst starts
RACING = range(2000, MEMBERS)  # 500 withdraw, 500 sign while the close runs
THREADS = 4

CLOSER = """
import sys
from bot.campaign import close_and_announce
from bot.config import load_settings
from bot.db import Database
from bot.letterfile import parse_letter
from bot.models._types import utcnow
from bot.store import letters

settings = load_settings(None, {"database": {"url": sys.argv[1]},
                                "letters": {"output_dir": sys.argv[3]}})
database = Database(settings.database.url)
with database.session() as session:  # warm up: connect, load the mappers
    letters.get_letter(session, slug=sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
started = utcnow()
with database.session() as session:
    letter = letters.get_letter(session, slug=sys.argv[2])
    compiled = close_and_announce(session, settings=settings, letter=letter, actor="cli",
                                  now=utcnow())
print("closed", compiled.signatory_count, (utcnow() - started).total_seconds(), flush=True)
"""


def _roster() -> str:
    rows = ["member_id,given_name,family_name,group,slack_id,role"]
    rows += [
        f"m{i:05d},Given{i},Family{i},Country {i % 40},U{i:08d},member" for i in range(MEMBERS)
    ]
    return "\n".join(rows) + "\n"


def _prepare(database: Database, settings: Settings) -> str:
    with database.session() as session:
        import_roster(session, data=_roster(), actor="test")
    letter = create_example_letter(database, settings, post_to=["slack:C1"])
    with database.session() as session:
        stored = letters.get_letter(session, slug=letter.slug)
        assert stored is not None
        for member in members.list_members(session)[:SIGNED_BEFORE]:
            signatures.sign(
                session,
                letter=stored,
                member=member,
                at=utcnow(),
                via_platform="slack",
                via_external_id=f"U{member.member_id[1:]:0>8}",
            )
    return letter.slug


def _meaning(reply: Reply) -> str:
    """What the member was told, by the reply's template (never by a word it shares)."""
    if reply.template == "replies/signed.j2":
        return "signed"
    if reply.template == "replies/already_signed.j2":
        return "signed"
    if reply.template == "replies/withdrawn.j2":
        return "withdrawn"
    message = str(reply.context.get("message", ""))
    if reply.template == "replies/error.j2" and "closed at" in message:
        return "closed"
    if reply.template == "replies/error.j2" and "nothing to withdraw" in message:
        return "not signed"
    return f"unexpected: {reply.template} {reply.context}"


def test_no_answer_contradicts_the_compiled_letter(
    settings: Settings, database: Database, db_url: str, tmp_path: Path
) -> None:
    slug = _prepare(database, settings)
    dispatcher = Dispatcher(settings, database, REGISTRY)
    with database.session() as session:
        signed_before = {m.member_id for m in members.list_members(session)[:SIGNED_BEFORE]}

    closer = subprocess.Popen(
        [sys.executable, "-c", CLOSER, db_url, slug, str(tmp_path / "out")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert closer.stdout is not None and closer.stdin is not None
    assert closer.stdout.readline().strip() == "ready"

    work = [f"m{i:05d}" for i in RACING]
    random.Random(7).shuffle(work)
    answers: dict[str, tuple[str, str]] = {}
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                if not work:
                    return
                member_id = work.pop()
            command = "unsign" if member_id in signed_before else "sign"
            user = f"U{member_id[1:]:0>8}"
            (reply,) = dispatcher.dispatch(Invocation("slack", "C1", user, command, [slug]))
            with lock:
                answers[member_id] = (command, _meaning(reply))
            time.sleep(0.002)  # spread the burst over the close

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    time.sleep(0.15)  # the close starts while commands are in full flow
    closer.stdin.write("go\n")
    closer.stdin.flush()
    for thread in threads:
        thread.join(timeout=120)
    out, _ = closer.communicate(timeout=120)
    assert closer.returncode == 0, out
    print(f"close: {out.strip()}; answers: {len(answers)}")

    with database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        assert letter is not None and letter.id is not None
        compilation = letters.get_compilation(session, letter_pk=letter.id)
        assert compilation is not None
        document = json.loads(compilation.outputs["json"])
    printed = {s["member_id"] for g in document["groups"] for s in g["signatories"]}
    assert document["signatures"] == len(printed) == compilation.signatory_count

    kinds = {meaning for _, meaning in answers.values()}
    contradictions = []
    for member_id, (command, meaning) in sorted(answers.items()):
        if meaning == "signed" and member_id not in printed:
            contradictions.append(f"{member_id}: told signed, not in the letter")
        elif meaning == "withdrawn" and member_id in printed:
            contradictions.append(f"{member_id}: told withdrawn, printed")
        elif meaning == "closed" and (member_id in printed) != (member_id in signed_before):
            contradictions.append(f"{member_id}: told closed, yet its {command} took effect")
        elif meaning not in ("signed", "withdrawn", "closed"):
            contradictions.append(f"{member_id}: {meaning}")
    assert len(answers) == len(RACING)
    assert not contradictions, f"{len(contradictions)} of {len(answers)}: {contradictions[:10]}"
    # the race really happened: some commands took effect before the close, others were refused
    assert "closed" in kinds and kinds & {"signed", "withdrawn"}, kinds


def test_update_and_extend_refuse_a_letter_closed_after_they_read_it(
    settings: Settings, database: Database, db_url: str
) -> None:
    """The letter is read open, another connection closes it, then the change is attempted."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers (BEGIN IMMEDIATE): this interleaving cannot occur")
    original = LETTER.read_text(encoding="utf-8")
    for change in ("extend", "update"):
        text = original.replace('slug = "interpol-2021"', f'slug = "race-{change}"')
        letter = create_example_letter(database, settings, post_to=["console:#members"], text=text)
        source = parse_letter(
            text.replace("Dear Ministers", "Dear Ministers and all"),
            zone=settings.letters.zone,
            now=utcnow(),
        )
        with database.session() as session:
            stale = letters.get_letter(session, slug=letter.slug)
            assert stale is not None and stale.state == "open"
            with database.session() as other:
                current = letters.get_letter(other, slug=letter.slug)
                assert current is not None
                close_and_announce(
                    other, settings=settings, letter=current, actor="t", now=utcnow()
                )
            if change == "extend":
                with pytest.raises(CampaignError, match="closed"):
                    extend_letter(
                        session,
                        settings=settings,
                        letter=stale,
                        deadline=utcnow() + timedelta(days=9),
                        actor="t",
                        now=utcnow(),
                    )
            else:
                assert (
                    letters.update_letter(
                        session, letter=stale, source=source, deadline=None, actor="t", at=utcnow()
                    )
                    is None
                )
        with database.session() as session:
            after = letters.get_letter(session, slug=letter.slug)
            assert after is not None and after.state == "closed"
            assert after.deadline == letter.deadline and after.version == letter.version
