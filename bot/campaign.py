"""Use cases shared by the CLI, the chat handlers and the scheduler.

Each function runs inside the caller's transaction, so a state change, its audit event and the
outbox rows it causes commit together (rule 6: a crash between decided and sent still sends).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from bot.config import Settings
from bot.models import Compilation, Identity, Letter, LetterState, Member, Role, Signature
from bot.names import ListedSignatory, group_key, in_letter_order
from bot.store import audit, letters, members, outbox, signatures
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
    letters.open_letter(session, letter=letter, actor=actor, at=now)
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
    # the state is checked under the letter's row lock: it may have closed since it was read
    moved = letters.extend_deadline(session, letter=letter, deadline=deadline, actor=actor, at=now)
    if moved is None:
        raise CampaignError(
            f"{letter.slug} closed at {format_utc(letter.closed_at or letter.deadline)}; "
            "its compiled text is final"
        )
    skip_past_reminders(session, settings=settings, letter=letter, now=now)
    return letter


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
    for post in letters.posts_of(session, letter_pk=letter.id):
        outbox.enqueue(
            session,
            key=f"closed:{letter.slug}:{post.platform}:{post.channel}",
            platform=post.platform,
            channel=post.channel,
            kind="message",
            payload={"template": "replies/closed_summary.j2", "context": summary},
            letter_pk=letter.id,
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
        "count": signatures.count_active(session, letter_pk=letter.id),
    }
    sent = 0
    for post in letters.posts_of(session, letter_pk=letter.id):
        message = outbox.enqueue(
            session,
            key=f"reminder:{letter.slug}:{label}:{iso_utc(letter.deadline)}:{post.platform}:"
            f"{post.channel}",
            platform=post.platform,
            channel=post.channel,
            kind="message",
            payload={"template": "replies/reminder.j2", "context": context},
            letter_pk=letter.id,
        )
        sent += message is not None
    return sent


# --- status ---------------------------------------------------------------------------------


@dataclass
class StatusView:
    slug: str
    title: str
    state: str
    deadline: datetime
    time_left: str
    signatures: int
    groups: dict[str, int]
    asker_signature: Signature | None = None
    signatories: list[ListedSignatory] = field(default_factory=list)  # in letter order
    pending: list[dict[str, Any]] = field(default_factory=list)
    not_signed: list[ListedSignatory] = field(default_factory=list)  # in letter order
    earlier_version: int = 0
    detailed: bool = False
    names_visible: bool = False
    names_omitted: int = 0  # names not listed for a member (too many); counts still shown

    def as_json(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "state": self.state,
            "deadline": iso_utc(self.deadline),
            "signatures": self.signatures,
            "groups": self.groups,
            "signatories": [
                {
                    "member_id": s.member_id,
                    "name": s.name,
                    "group": s.group,
                    "signed_at": iso_utc(s.signed_at) if s.signed_at else None,
                    "via": s.via,
                }
                for s in self.signatories
            ],
            "pending": self.pending,
        }


MEMBER_NAME_LIMIT = 200  # above this a member's status gives counts, not a wall of names


def status_view(
    session: Session,
    *,
    settings: Settings,
    letter: Letter,
    asker: Member | None,
    coordinator: bool,
    now: datetime,
    signing_details: bool = False,
) -> StatusView:
    """Names are loaded only where they will be shown, and when and how each person signed only
    with signing_details (JSON shows it; chat does not). A coordinator always sees the names, so
    the counts come from them; otherwise the database counts.
    """
    assert letter.id is not None
    listed: list[ListedSignatory] | None = None
    if coordinator:
        listed = signatures.listed_signatories(
            session, letter_pk=letter.id, signing_details=signing_details
        )
        counts = dict(Counter(person.group for person in listed))
    else:
        counts = signatures.counts_by_group(session, letter_pk=letter.id)
    total = sum(counts.values())
    view = StatusView(
        slug=letter.slug,
        title=letter.title,
        state=letter.state,
        deadline=letter.deadline,
        time_left=time_left(letter.deadline, now),
        signatures=total,
        groups={name: counts[name] for name in sorted(counts, key=group_key) if counts[name]},
        detailed=coordinator,
        names_visible=coordinator or settings.letters.public_signatories,
    )
    if asker is not None and asker.id is not None:
        view.asker_signature = signatures.active_signature(
            session, letter_pk=letter.id, member_pk=asker.id
        )
    if view.names_visible and not coordinator and total > MEMBER_NAME_LIMIT:
        view.names_omitted = total
    elif view.names_visible:
        if listed is None:
            listed = signatures.listed_signatories(
                session, letter_pk=letter.id, signing_details=signing_details
            )
        view.signatories = in_letter_order(listed)
    if coordinator:
        view.pending = [
            {
                "platform": p.platform,
                "user": p.external_id,
                "display_name": p.display_name,
                "at": iso_utc(p.at),
            }
            for p in members.list_pending(session, letter_pk=letter.id)
        ]
        view.not_signed = in_letter_order(signatures.not_signed(session, letter_pk=letter.id))
        view.earlier_version = signatures.count_other_versions(session, letter=letter)
    return view
