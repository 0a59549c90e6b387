"""Use cases shared by the CLI, the chat handlers and the scheduler.

Each function runs inside the caller's transaction, so a state change, its audit event and the
outbox rows it causes commit together (rule 6: a crash between decided and sent still sends).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from bot.config import Settings
from bot.direct import enqueue_dm
from bot.models import Compilation, Identity, Letter, LetterState, Member, Role, Signature
from bot.names import in_letter_order
from bot.store import audit, letters, outbox, signatures
from bot.timeutil import format_utc, iso_utc, time_left

PLATFORMS = ("console", "slack", "matrix")


class CampaignError(Exception):
    """A refused operation (unknown slug, past deadline, wrong state); the message says why."""


@dataclass(frozen=True)
class Target:
    platform: str
    channel: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.channel}"


def parse_target(text: str) -> Target:
    platform, sep, channel = text.strip().partition(":")
    if not sep or platform not in PLATFORMS or not channel:
        raise CampaignError(
            f"{text!r} is not PLATFORM:CHANNEL (e.g. slack:C0123, matrix:!room:server, "
            "console:#general)"
        )
    return Target(platform, channel)


def require_letter(session: Session, slug: str) -> Letter:
    letter = letters.get_letter(session, slug=slug)
    if letter is None:
        raise CampaignError(f"no letter with slug {slug!r}")
    return letter


def post_letter(
    session: Session,
    *,
    settings: Settings,
    letter: Letter,
    targets: list[Target],
    actor: str,
    now: datetime,
) -> list[Target]:
    """Open the letter (draft -> open) and enqueue its posts; returns the newly queued targets."""
    if letter.state == LetterState.closed.value:
        raise CampaignError(f"{letter.slug} is closed; it cannot be posted again")
    if letter.deadline <= now:
        raise CampaignError(
            f"the deadline of {letter.slug} ({format_utc(letter.deadline)}) has passed; "
            "extend it first"
        )
    letters.open_letter(
        session,
        letter=letter,
        actor=actor,
        at=now,
        visibility=settings.letters.default_visibility,
    )
    skip_past_reminders(session, settings=settings, letter=letter, now=now)
    queued: list[Target] = []
    assert letter.id is not None
    for target in targets:
        letters.upsert_post(
            session, letter_pk=letter.id, platform=target.platform, channel=target.channel
        )
        message = outbox.enqueue(
            session,
            key=f"post:{letter.slug}:{target}",
            platform=target.platform,
            channel=target.channel,
            kind="post_letter",
            payload={"slug": letter.slug},
            letter_pk=letter.id,
        )
        if message is not None:
            queued.append(target)
            audit.append(
                session,
                actor=actor,
                action="letter.post_queued",
                letter_slug=letter.slug,
                detail={"target": str(target)},
            )
    return queued


def extend_letter(
    session: Session,
    *,
    settings: Settings,
    letter: Letter,
    deadline: datetime,
    actor: str,
    now: datetime,
) -> Letter:
    if letter.state != LetterState.closed.value and deadline <= now:
        raise CampaignError(f"the new deadline {format_utc(deadline)} is in the past")
    if letter.embargo is not None and deadline > letter.embargo:
        raise CampaignError(
            f"the new deadline {format_utc(deadline)} is after the embargo "
            f"({format_utc(letter.embargo)}): the names would be published before signing "
            "closes; move the embargo first (letter update)"
        )
    # the state is checked under the letter's row lock: it may have closed since it was read
    moved = letters.extend_deadline(session, letter=letter, deadline=deadline, actor=actor, at=now)
    if moved is None:
        raise CampaignError(
            f"{letter.slug} closed at {format_utc(letter.closed_at or letter.deadline)}; "
            "its compiled text is final"
        )
    skip_past_reminders(session, settings=settings, letter=letter, now=now)
    announce_deadline_moved(session, letter=letter, now=now)
    return letter


def announce_deadline_moved(session: Session, *, letter: Letter, now: datetime) -> int:
    """A notice with the new deadline in every channel the letter was posted in (DESIGN.md §8):
    members who planned around the old one learn it where they saw the letter."""
    assert letter.id is not None
    context = {
        "title": letter.title,
        "slug": letter.slug,
        "deadline": format_utc(letter.deadline),
        "time_left": time_left(letter.deadline, now),
    }
    return to_posted_channels(
        session,
        letter=letter,
        key=f"extended:{letter.slug}:{iso_utc(now)}:{iso_utc(letter.deadline)}",
        payload={"template": "replies/deadline_moved.j2", "context": context},
    )


def to_posted_channels(
    session: Session, *, letter: Letter, key: str, payload: dict[str, Any]
) -> int:
    """Queue one message in every channel the letter was posted in (the key names what it is;
    each channel's row adds platform and channel); how many were new."""
    assert letter.id is not None
    queued = 0
    for post in letters.posts_of(session, letter_pk=letter.id):
        message = outbox.enqueue(
            session,
            key=f"{key}:{post.platform}:{post.channel}",
            platform=post.platform,
            channel=post.channel,
            kind="message",
            payload=payload,
            letter_pk=letter.id,
        )
        queued += message is not None
    return queued


def skip_past_reminders(
    session: Session, *, settings: Settings, letter: Letter, now: datetime
) -> None:
    """Reminders whose time has already passed when a letter is posted or extended are skipped."""
    if letter.state != LetterState.open.value:
        return
    for label, offset in settings.scheduler.reminder_offsets:
        if letter.deadline - offset <= now:
            letters.record_reminder(
                session, letter=letter, offset_label=label, status="skipped", at=now
            )


def close_and_announce(
    session: Session, *, settings: Settings, letter: Letter, actor: str, now: datetime
) -> Compilation | None:
    """Close, compile and enqueue the announcements, once; None if it was already closed."""
    if letter.state == LetterState.draft.value:
        raise CampaignError(f"{letter.slug} is a draft; post it before closing")
    compilation = letters.close_letter(
        session, letter=letter, actor=actor, at=now, output=settings.output
    )
    if compilation is None:
        return None
    assert letter.id is not None
    summary = {
        "title": letter.title,
        "slug": letter.slug,
        "count": compilation.signatory_count,
        "closed_at": format_utc(now),
    }
    embargoed = letter.embargo is not None and letter.embargo > now
    closing = _closing_message(settings, letter, summary) if embargoed else None
    to_posted_channels(
        session,
        letter=letter,
        key=f"closed:{letter.slug}",
        payload=closing or {"template": "replies/closed_summary.j2", "context": summary},
    )
    for raw in settings.coordinators.announce:
        target = parse_target(raw)
        outbox.enqueue(
            session,
            key=f"compiled:{letter.slug}:{target}",
            platform=target.platform,
            channel=target.channel,
            kind="compiled",
            payload={"slug": letter.slug, **summary},
            letter_pk=letter.id,
        )
    _after_close(
        session, settings=settings, letter=letter, compilation=compilation, actor=actor, now=now
    )
    return compilation


def coordinator_accounts(session: Session, *, settings: Settings, platform: str) -> list[str]:
    """Coordinators' accounts on a platform: `[coordinators].<platform>` and linked roster ones."""
    accounts = list(getattr(settings.coordinators, platform, []))
    linked = session.exec(
        select(Identity.external_id)
        .join(Member, col(Identity.member_pk) == col(Member.id))
        .where(
            Identity.platform == platform,
            Member.role == Role.coordinator.value,
            col(Member.active),
        )
        .order_by(col(Identity.external_id))
    ).all()
    return list(dict.fromkeys([*accounts, *linked]))


def notify_undelivered(
    session: Session,
    *,
    settings: Settings,
    platform: str,
    about: str,
    channel: str,
    what: str,
    title: str,
    slug: str,
    error: str,
    letter_pk: int | None,
) -> int:
    """Tell the platform's coordinators by direct message, once per failed outbox row (`about`),
    that the bot could not post in a channel it is not a member of: `cosign letter post` only
    enqueues, so the coordinator who ran it learns nothing otherwise."""
    context = {"what": what, "title": title, "slug": slug, "channel": channel, "error": error}
    queued = 0
    for account in coordinator_accounts(session, settings=settings, platform=platform):
        message = outbox.enqueue(
            session,
            key=f"undelivered:{about}:{account}",
            platform=platform,
            channel=account,
            kind="message",
            payload={"template": "replies/undelivered.j2", "context": context},
            letter_pk=letter_pk,
        )
        queued += message is not None
    return queued


def enqueue_reminder(session: Session, *, letter: Letter, label: str, now: datetime) -> int:
    """Send one reminder to each channel the letter was posted in."""
    assert letter.id is not None
    context = {
        "title": letter.title,
        "slug": letter.slug,
        "time_left": time_left(letter.deadline, now),
        # private: no number anywhere members look (the visibility is fixed once posted)
        "count": None
        if letter.visibility == "private"
        else signatures.count_active(session, letter_pk=letter.id),
    }
    return to_posted_channels(
        session,
        letter=letter,
        key=f"reminder:{letter.slug}:{label}:{iso_utc(letter.deadline)}",
        payload={"template": "replies/reminder.j2", "context": context},
    )


# --- campaigns: visibility, leads, embargo, reminders by direct message (DESIGN.md §8) --------


def letter_visibility(letter: Letter, settings: Settings) -> str:
    """public | counts | private: the letter's own (fixed when posted), else the configured."""
    return letter.visibility or settings.letters.default_visibility


def _closing_message(settings: Settings, letter: Letter, summary: dict[str, Any]) -> dict[str, Any]:
    """What member channels are told at the deadline of an embargoed letter: closed, and when it
    will be published; no names, and no count under private."""
    assert letter.embargo is not None
    context = {
        **summary,
        "publish_at": format_utc(letter.embargo),
        "count": None if letter_visibility(letter, settings) == "private" else summary["count"],
    }
    return {"template": "replies/closed_embargo.j2", "context": context}


def _after_close(
    session: Session,
    *,
    settings: Settings,
    letter: Letter,
    compilation: Compilation,
    actor: str,
    now: datetime,
) -> None:
    """Publication at close when there is no embargo (or it has already passed), and the
    coordinators' note naming leads who did not sign and when an embargo ends."""
    assert letter.id is not None
    if letter.embargo is None:
        # The close is the publication: the closing summary just queued is the published one.
        session.execute(
            update(Letter)
            .where(col(Letter.id) == letter.id, col(Letter.published_at).is_(None))
            .values(published_at=now)
        )
        session.refresh(letter)
    elif letter.embargo <= now:
        publish_letter(session, settings=settings, letter=letter, actor=actor, now=now)
    missing = unsigned_leads(session, letter=letter, compilation=compilation)
    # signed an earlier text and never re-confirmed: not printed (DESIGN.md §9)
    lapsed = [
        person.line
        for person in in_letter_order(
            signatures.awaiting_reconfirmation(session, letter_pk=letter.id)
        )
    ]
    if not missing and not lapsed and letter.published_at is not None:
        return
    context = {
        "title": letter.title,
        "slug": letter.slug,
        "missing": missing,
        "lapsed": lapsed,
        "version": letter.version_number,
        "publish_at": format_utc(letter.embargo)
        if letter.embargo is not None and letter.published_at is None
        else "",
    }
    for raw in settings.coordinators.announce:
        target = parse_target(raw)
        outbox.enqueue(
            session,
            key=f"closed-note:{letter.slug}:{target}",
            platform=target.platform,
            channel=target.channel,
            kind="message",
            payload={"template": "replies/closed_coordinators.j2", "context": context},
            letter_pk=letter.id,
        )


def _printed(compilation: Compilation) -> tuple[list[str], list[list[str]]]:
    """(member_ids of the leads printed first, the signatory block's lines block by block), as
    the compiled json has them: the published names are exactly the compiled ones."""
    try:
        document = json.loads(compilation.outputs.get("json", ""))
    except ValueError:
        return [], []
    leads = document.get("leads") or []
    blocks = [[f"{s['name']} ({s['group']})" for s in leads]] if leads else []
    blocks += [
        [f"{s['name']} ({g['group']})" for s in g["signatories"]] for g in document["groups"]
    ]
    return [s["member_id"] for s in leads], blocks


def unsigned_leads(session: Session, *, letter: Letter, compilation: Compilation) -> list[str]:
    """The leads the compiled letter does not print (they did not sign), as "name (group)"."""
    printed, _ = _printed(compilation)
    missing = [member_id for member_id in letter.leads or () if member_id not in printed]
    if not missing:
        return []
    found = {
        member.member_id: member
        for member in session.exec(select(Member).where(col(Member.member_id).in_(missing)))
    }
    return [
        f"{found[m].rendered_name()} ({found[m].group})" if m in found else m for m in missing
    ]


def publish_letter(
    session: Session, *, settings: Settings, letter: Letter, actor: str, now: datetime
) -> bool:
    """The closing summary with the names, to every channel the letter was posted in, once:
    at the embargo (the scheduler) or earlier on a coordinator's word. False if it already was.

    The conditional UPDATE is the gate, as for closing: of two replicas (or the scheduler and a
    coordinator) only one publishes; the outbox keys make a retried transaction send it once.
    """
    if letter.state != LetterState.closed.value:
        raise CampaignError(
            f"{letter.slug} is still {letter.state}: it is published when it closes"
            + (f" and its embargo ends ({format_utc(letter.embargo)})" if letter.embargo else "")
        )
    result = session.execute(
        update(Letter)
        .where(col(Letter.id) == letter.id, col(Letter.published_at).is_(None))
        .values(published_at=now)
    )
    session.refresh(letter)
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    assert letter.id is not None
    compilation = letters.get_compilation(session, letter_pk=letter.id)
    assert compilation is not None
    _, blocks = _printed(compilation)
    audit.append(
        session,
        actor=actor,
        action="letter.published",
        letter_slug=letter.slug,
        detail={
            "embargo": iso_utc(letter.embargo) if letter.embargo else None,
            "early": letter.embargo is not None and now < letter.embargo,
            "signatures": compilation.signatory_count,
        },
    )
    context = {
        "title": letter.title,
        "slug": letter.slug,
        "count": compilation.signatory_count,
        "closed_at": format_utc(letter.closed_at or now),
        "signatories": "\n\n".join("\n".join(lines) for lines in blocks),
    }
    to_posted_channels(
        session,
        letter=letter,
        key=f"published:{letter.slug}",
        payload={"template": "replies/published.j2", "context": context},
    )
    return True


def enqueue_dm_reminders(session: Session, *, letter: Letter, label: str, now: datetime) -> int:
    """One direct message per member who has neither signed nor withdrawn (and has not said
    `remind off`), per offset: the nudge reaches those it is for, not the channel."""
    assert letter.id is not None
    touched = select(Signature.member_pk).where(Signature.letter_pk == letter.id)
    query = (
        select(Member)
        .where(
            col(Member.active),
            Member.role == Role.member.value,
            col(Member.reminders_off).is_(False),
            col(Member.id).not_in(touched),
        )
        .order_by(col(Member.id))
    )
    context = {
        "title": letter.title,
        "slug": letter.slug,
        "time_left": time_left(letter.deadline, now),
    }
    sent = 0
    for member in session.exec(query).all():
        sent += enqueue_dm(
            session,
            member=member,
            key=f"reminder:{letter.slug}:{label}:{member.member_id}",
            template="replies/dm_reminder.j2",
            context=context,
            letter_pk=letter.id,
        )
    return sent
