"""Copies of the published letter (DESIGN.md §10): each compiled signatory gets the PDF by direct
message, once, when the letter is published (at close, or at the end of its embargo).

Queued by a scheduler pass, never inside the close or publish transaction: a letter with 10,000
signatories must not hold closing up. The pass looks for published letters without a
LetterCopies row, queues their copies BATCH per transaction (outbox rows of kind `dm_file`, keys
`dm:copy:{slug}:{member_id}`) and then writes that row. A pass cut short by a crash is resumed by
the next one, and two replicas running it at once queue each copy once: every batch locks the
letter's row, looks for the LetterCopies row first and skips keys already queued.

Who gets a copy: the signatories the compiled letter prints (its json output), reached like every
direct message (Slack, else Matrix, else their staff, else the console). With
`[letters].send_copies = false` the letter is settled without copies (status `off`), so turning it
on later does not send copies of letters published meanwhile; letters published before copies
existed were settled by migration 0013 (status `before_copies`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from bot.config import Settings
from bot.db import Database
from bot.direct import DM_FILE, Direct, enqueue_dms
from bot.models import (
    CompiledFile,
    CopiesStatus,
    Letter,
    LetterCopies,
    Member,
    OutboxMessage,
)
from bot.store import audit, letters
from bot.timeutil import format_utc

log = logging.getLogger(__name__)

BATCH = 500  # copies queued per transaction: short write locks, bounded memory
TEMPLATE = "replies/dm_copy.j2"
ACTOR = "scheduler"


@dataclass(frozen=True)
class Plan:
    """What one letter's copies need, read once before the batches."""

    letter_pk: int
    slug: str
    context: dict[str, Any]  # shared by every copy; each adds the signatory's name
    signatories: list[tuple[str, str]]  # (member_id, "name (group)") as the letter prints them
    has_pdf: bool


def unsettled_letters(session: Session) -> list[int]:
    """Published letters whose copies are neither queued nor decided against."""
    settled = select(LetterCopies.letter_pk)
    found = session.exec(
        select(Letter.id)
        .where(col(Letter.published_at).is_not(None), col(Letter.id).not_in(settled))
        .order_by(col(Letter.id))
    ).all()
    return [pk for pk in found if pk is not None]


def printed_signatories(outputs: dict[str, str]) -> list[tuple[str, str]]:
    """(member_id, "name (group)") of everyone the compiled letter prints, leads first: the
    copies go to exactly the published names, not to whoever has a signature row."""
    try:
        document = json.loads(outputs.get("json", ""))
    except ValueError:
        return []
    printed = [(s["member_id"], f"{s['name']} ({s['group']})") for s in document.get("leads", [])]
    for group in document.get("groups", []):
        name = group["group"]
        printed += [(s["member_id"], f"{s['name']} ({name})") for s in group["signatories"]]
    return printed


def _plan(session: Session, letter_pk: int) -> Plan | None:
    """Everything the batches need, read once (None: not published, or not compiled)."""
    letter = session.get(Letter, letter_pk)
    if letter is None or letter.published_at is None:
        return None
    compilation = letters.get_compilation(session, letter_pk=letter_pk)
    if compilation is None or compilation.id is None:
        return None
    has_pdf = (
        session.exec(
            select(CompiledFile.id).where(
                CompiledFile.compilation_pk == compilation.id, CompiledFile.format == "pdf"
            )
        ).first()
        is not None
    )
    context = {
        "title": letter.title,
        "slug": letter.slug,
        "count": compilation.signatory_count,
        "published_at": format_utc(letter.published_at),
    }
    return Plan(letter_pk, letter.slug, context, printed_signatories(compilation.outputs), has_pdf)


def _settled(session: Session, letter_pk: int) -> bool:
    """Whether the copies are settled, asked under the letter row's lock (PostgreSQL; SQLite
    transactions are serialised anyway): of two replicas, one batch at a time goes ahead."""
    session.exec(select(Letter.id).where(Letter.id == letter_pk).with_for_update()).first()
    found = session.exec(select(LetterCopies.id).where(LetterCopies.letter_pk == letter_pk))
    return found.first() is not None


def _queue_batch(session: Session, plan: Plan, batch: list[tuple[str, str]]) -> int:
    """One transaction's share of the copies: its members loaded at once, their rows queued
    at once (a short write lock, whatever the letter's size)."""
    names = dict(batch)
    found = {
        member.member_id: member
        for member in session.exec(select(Member).where(col(Member.member_id).in_(list(names))))
    }
    directs = [
        Direct(
            member=found[member_id],
            key=f"copy:{plan.slug}:{member_id}",
            context={**plan.context, "name": name},
        )
        for member_id, name in batch
        if member_id in found  # a member deleted from the database since: nobody to send to
    ]
    return enqueue_dms(
        session,
        directs,
        template=TEMPLATE,
        letter_pk=plan.letter_pk,
        attach={"slug": plan.slug, "format": "pdf"},
    )


def _settle(
    session: Session, plan: Plan, *, status: CopiesStatus, now: datetime
) -> LetterCopies:
    """Write the LetterCopies row and its audit event; the count is every copy queued for the
    letter, whichever pass or replica queued it."""
    count = 0
    if status == CopiesStatus.queued:
        count = session.exec(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.letter_pk == plan.letter_pk, OutboxMessage.kind == DM_FILE)
        ).one()
    row = LetterCopies(letter_pk=plan.letter_pk, status=status.value, count=count, queued_at=now)
    session.add(row)
    if status == CopiesStatus.queued:
        action = "letter.copies_queued"
        detail: dict[str, Any] = {"copies": count, "signatories": len(plan.signatories)}
    else:
        action, detail = "letter.copies_skipped", {"reason": status.value}
    audit.append(session, actor=ACTOR, action=action, letter_slug=plan.slug, detail=detail, at=now)
    return row


def queue_letter_copies(
    database: Database, *, settings: Settings, letter_pk: int, now: datetime
) -> int:
    """Queue one letter's copies (in batches) and settle it; how many copies this call queued."""
    with database.session() as session:
        plan = _plan(session, letter_pk)
    if plan is None:
        return 0
    status = CopiesStatus.queued
    if not settings.letters.send_copies:
        status = CopiesStatus.off
    elif not plan.has_pdf:
        status = CopiesStatus.no_pdf
        log.warning("%s was published without a PDF: no copies are sent", plan.slug)
    queued = 0
    if status == CopiesStatus.queued:
        for start in range(0, len(plan.signatories), BATCH):
            with database.session() as session:
                if _settled(session, letter_pk):
                    return queued  # another replica finished meanwhile
                queued += _queue_batch(session, plan, plan.signatories[start : start + BATCH])
    with database.session() as session:
        if _settled(session, letter_pk):
            return queued
        row = _settle(session, plan, status=status, now=now)
    log.info("copies of %s: %s (%d direct messages)", plan.slug, row.status, row.count)
    return queued


def queue_copies(database: Database, *, settings: Settings, now: datetime) -> int:
    """The scheduler's pass: settle every published letter's copies; how many were queued.
    A letter that fails is logged and left for the next pass; the others go ahead."""
    with database.session() as session:
        pending = unsettled_letters(session)
    queued = 0
    for letter_pk in pending:
        try:
            queued += queue_letter_copies(
                database, settings=settings, letter_pk=letter_pk, now=now
            )
        except Exception:
            log.exception("copies of letter %s: queuing failed; the next pass retries", letter_pk)
    return queued
