"""Small builders shared by tests: the example roster and letter in a database; reply kinds."""

from __future__ import annotations

import re
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
REPLIES = ROOT / "templates" / "replies"
# Replies a sign command can get, told apart by their whole wording (not a word like "signed",
# which "You already signed" and "nothing was signed" contain too).
SIGN_REPLY_KINDS = ("signed", "already_signed", "unknown_account", "withdrawn", "apology")


def _reply_pattern(kind: str) -> re.Pattern[str]:
    """A one-line template as a regex: its literal text exact, every {{ … }} a wildcard."""
    source = (REPLIES / f"{kind}.j2").read_text(encoding="utf-8").strip()
    assert "\n" not in source and "{%" not in source, f"{kind}.j2 is not a one-line template"
    literal = re.split(r"\{\{.*?\}\}", source)
    return re.compile("^" + ".*?".join(re.escape(part) for part in literal) + "$", re.MULTILINE)


_REPLY_PATTERNS = {kind: _reply_pattern(kind) for kind in SIGN_REPLY_KINDS}


def reply_kinds(text: str) -> set[str]:
    """Which sign-related reply templates a message shows (in any line of it)."""
    return {kind for kind, pattern in _REPLY_PATTERNS.items() if pattern.search(text)}


def reply_kind(text: str) -> str:
    """The one kind of a reply: "signed" only for the confirmation of a new signature."""
    kinds = reply_kinds(text)
    return kinds.pop() if len(kinds) == 1 else f"other: {text[:120]!r}"


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
