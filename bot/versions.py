"""When a letter's text changes (DESIGN.md §9): who is asked to re-confirm, and what they see.

`letters.update_letter` keeps the new version and decides what counts, in the update's
transaction. This module adds what people are told, queued in the same transaction: each signer
whose signature lapsed gets one direct message with the word diff from the text they signed (the
staff who signed for a member get it, for that member); a minor change gets a short notice with
the diff in the letter's channels. Posts show the new text through the live counter, which edits
every post whose shown version is not the current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from bot import textdiff
from bot.campaign import to_posted_channels
from bot.direct import Direct, enqueue_dms
from bot.letterfile import LetterSource
from bot.models import Letter, LetterVersion, Member
from bot.store import letters, outbox, versions
from bot.store.letters import TextUpdate
from bot.timeutil import format_utc


class VersionError(Exception):
    """A refusal about versions, shown as one line (nothing was changed)."""


@dataclass(frozen=True)
class VersionDiff:
    slug: str
    old: LetterVersion
    new: LetterVersion
    pieces: list[textdiff.Piece]

    def header(self) -> str:
        return (
            f"{self.slug}: version {self.old.number} ({self.old.sha256[:16]}) → version "
            f"{self.new.number} ({self.new.sha256[:16]})"
        )


def diff_versions(
    session: Session, *, letter: Letter, old: int | None = None, new: int | None = None
) -> VersionDiff:
    """The word diff between two versions; by default the last change (current − 1 → current)."""
    assert letter.id is not None
    current = letter.version_number
    new = current if new is None else new
    old = new - 1 if old is None else old
    for name, number in (("--from", old), ("--to", new)):
        if not 1 <= number <= current:
            raise VersionError(
                f"{letter.slug} has version{'s 1–' if current > 1 else ' '}{current}; "
                f"{name} {number} is not one of them"
                + ("" if current > 1 else " (its text has not changed)")
            )
    if old == new:
        raise VersionError(f"--from and --to are both {old}: give two different versions")
    first = versions.get_version(session, letter_pk=letter.id, number=old)
    second = versions.get_version(session, letter_pk=letter.id, number=new)
    if first is None or second is None:
        raise VersionError(f"{letter.slug}: version {old if first is None else new} is missing")
    pieces = textdiff.word_diff(
        versions.version_text(first, slug=letter.slug),
        versions.version_text(second, slug=letter.slug),
    )
    return VersionDiff(letter.slug, first, second, pieces)


def change_text(
    session: Session,
    *,
    letter: Letter,
    source: LetterSource,
    deadline: datetime | None,
    minor: bool,
    actor: str,
    now: datetime,
) -> TextUpdate | None:
    """Update the letter and queue what people are told; None if it closed meanwhile.

    Refused with VersionError (nothing changed in the database) when the file changes nothing.
    """
    update = letters.update_letter(
        session, letter=letter, source=source, deadline=deadline, actor=actor, at=now, minor=minor
    )
    if update is None:
        return None
    if not update.changes:
        raise VersionError(
            f"nothing changed: {source.slug}'s text and settings are already those of the file"
        )
    if update.previous is not None and update.current is not None:
        _reprint_console_posts(session, letter=letter)
        if update.lapsed:
            _ask_to_reconfirm(session, letter=letter, update=update)
        elif minor and update.letter.state == "open":
            _notice_minor(session, letter=letter, update=update, now=now)
    return update


def _reprint_console_posts(session: Session, *, letter: Letter) -> None:
    """Chat posts are edited by the live counter; a console post, printed, cannot be: it is
    printed again with the new text, marked as the edit (once per version and channel)."""
    assert letter.id is not None
    for post in letters.posts_of(session, letter_pk=letter.id):
        if post.platform == "console":
            outbox.enqueue(
                session,
                key=f"reprint:{letter.slug}:{letter.version_number}:{post.channel}",
                platform="console",
                channel=post.channel,
                kind="post_letter",
                payload={"slug": letter.slug, "edited": True},
                letter_pk=letter.id,
            )


def _diff_from(session: Session, letter: Letter, number: int, cache: dict[int, Any]) -> Any:
    """The condensed diff from version `number` to the current one (computed once per number)."""
    if number not in cache:
        change = diff_versions(session, letter=letter, old=number, new=letter.version_number)
        cache[number] = textdiff.condensed(change.pieces)
    return cache[number]


def _ask_to_reconfirm(session: Session, *, letter: Letter, update: TextUpdate) -> None:
    """One direct message per lapsed signature, to whoever signed it (the member, or the staff
    who signed for them), with the change from the text they signed and how to re-confirm."""
    assert letter.id is not None
    wanted = {pk for lapsed in update.lapsed for pk in (lapsed.member_pk, lapsed.signed_by_pk)}
    people = {
        m.id: m for m in session.exec(select(Member).where(col(Member.id).in_(wanted))).all()
    }
    diffs: dict[int, Any] = {}
    directs = []
    for lapsed in update.lapsed:
        member = people[lapsed.member_pk]
        staff = people.get(lapsed.signed_by_pk) if lapsed.signed_by_pk is not None else None
        recipient = staff if staff is not None and staff.active else member
        for_member = recipient is not member
        command = f"sign {letter.slug}" + (f" for {member.member_id}" if for_member else "")
        context = {
            "title": letter.title,
            "slug": letter.slug,
            "name": member.rendered_name(),
            "for_member": for_member,
            "signed_version": lapsed.version_number,
            "version": letter.version_number,
            "signed_at": format_utc(lapsed.signed_at),
            "deadline": format_utc(letter.deadline),
            "diff": _diff_from(session, letter, lapsed.version_number, diffs),
            "command": command,
            # Slack adds a Re-confirm button that runs this (the other platforms: the command)
            "button": {"action": "reconfirm", "value": command.removeprefix("sign ")},
        }
        key = f"reconfirm:{letter.slug}:{letter.version_number}:{member.member_id}"
        directs.append(Direct(recipient, key, context))
    # In batches: thousands of rows, one query for the accounts and one for the keys each.
    enqueue_dms(session, directs, template="replies/dm_reconfirm.j2", letter_pk=letter.id)


def _notice_minor(session: Session, *, letter: Letter, update: TextUpdate, now: datetime) -> None:
    """A minor change is told where the letter was posted, with its diff: nobody is asked."""
    assert update.previous is not None
    diffs: dict[int, Any] = {}
    to_posted_channels(
        session,
        letter=letter,
        key=f"corrected:{letter.slug}:{letter.version_number}",
        payload={
            "template": "replies/text_corrected.j2",
            "context": {
                "title": letter.title,
                "slug": letter.slug,
                "version": letter.version_number,
                "at": format_utc(now),
                "moved": update.moved,
                "diff": _diff_from(session, letter, update.previous.number, diffs),
            },
        },
    )

