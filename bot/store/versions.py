"""The texts a letter has had (DESIGN.md §9): numbered versions, each with its SHA-256."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from bot.compile import LetterText, render_letter
from bot.models import Letter, LetterVersion
from bot.timeutil import format_utc


def add_version(
    session: Session, *, letter: Letter, minor: bool, actor: str, at: datetime
) -> LetterVersion:
    """Keep the letter's current text as its version `letter.version_number`."""
    assert letter.id is not None
    version = LetterVersion(
        letter_pk=letter.id,
        number=letter.version_number,
        sha256=letter.version,
        title=letter.title,
        date=letter.date,
        addressees=list(letter.addressees),
        body=letter.body,
        closing=letter.closing,
        signed_by=letter.signed_by,
        minor=minor,
        created_by=actor,
        created_at=at,
    )
    session.add(version)
    session.flush()
    return version


def get_version(session: Session, *, letter_pk: int, number: int) -> LetterVersion | None:
    query = select(LetterVersion).where(
        LetterVersion.letter_pk == letter_pk, LetterVersion.number == number
    )
    return session.exec(query).first()


def list_versions(session: Session, *, letter_pk: int) -> Sequence[LetterVersion]:
    query = (
        select(LetterVersion)
        .where(LetterVersion.letter_pk == letter_pk)
        .order_by(col(LetterVersion.number))
    )
    return session.exec(query).all()


def version_text(version: LetterVersion, *, slug: str) -> str:
    """The version as a signer read it: the compiled text without signatories."""
    text = LetterText(
        slug=slug,
        title=version.title,
        date=version.date,
        addressees=list(version.addressees),
        body=version.body,
        closing=version.closing,
        signed_by=version.signed_by,
    )
    return render_letter(text, [], "txt").rstrip("\n")


def change_note(session: Session, *, letter: Letter) -> str:
    """The line a post shows once the text has changed ("" for a first version)."""
    assert letter.id is not None
    if letter.version_number <= 1:
        return ""
    current = get_version(session, letter_pk=letter.id, number=letter.version_number)
    when = f" on {format_utc(current.created_at)}" if current is not None else ""
    if current is not None and current.minor:
        return f"✏️ Text corrected{when} (version {letter.version_number}, a minor change)."
    return (
        f"✏️ Text changed{when} (version {letter.version_number}): signatures given to an "
        "earlier text count again once re-confirmed."
    )
