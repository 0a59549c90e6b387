"""Small builders shared by tests: the example roster and letter in a database."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from bot.campaign import Target, post_letter
from bot.config import Settings
from bot.db import Database
from bot.letterfile import parse_letter
from bot.models import Letter
from bot.models._types import utcnow
from bot.roster import import_roster
from bot.store import letters

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ROSTER = EXAMPLES / "ipac-roster.csv"
LETTER = EXAMPLES / "interpol-2021.md"
EXPECTED = EXAMPLES / "interpol-2021.expected.txt"


def import_example_roster(database: Database) -> None:
    with database.session() as session:
        import_roster(session, data=ROSTER.read_bytes(), actor="test")


def create_example_letter(
    database: Database,
    settings: Settings,
    *,
    deadline: datetime | None = None,
    post_to: list[str] | None = None,
    text: str | None = None,
) -> Letter:
    now = utcnow()
    source = parse_letter(
        text or LETTER.read_text(encoding="utf-8"), zone=settings.letters.zone, now=now
    )
    with database.session() as session:
        letter = letters.create_letter(
            session, source=source, deadline=deadline or now + timedelta(days=3), actor="test"
        )
        assert letter is not None
        if post_to is not None:
            targets = [Target(*t.split(":", 1)) for t in post_to]
            post_letter(
                session, settings=settings, letter=letter, targets=targets, actor="test", now=now
            )
    return letter


def sign_everyone(database: Database, slug: str = "interpol-2021") -> None:
    """Sign every roster member (role member) directly in the store, as the platforms would."""
    from bot.store import members, signatures

    with database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        assert letter is not None
        for member in members.list_members(session):
            if member.role == "member":
                signatures.sign(
                    session,
                    letter=letter,
                    member=member,
                    at=utcnow(),
                    via_platform="console",
                    via_external_id=member.member_id,
                )
