"""Status (DESIGN.md §5): counts by group and time left for everyone; for coordinators the
names, who has not signed, who must confirm or re-confirm, the pending accounts and the leads
missing. Names are loaded only where they will be shown."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from bot.campaign import letter_visibility
from bot.config import Settings
from bot.models import Letter, Member, Signature
from bot.names import ListedSignatory, group_key, in_letter_order
from bot.store import members, signatures
from bot.timeutil import format_utc, iso_utc, time_left


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
    asker_must_reconfirm: bool = False  # their signature was given to an earlier text
    signatories: list[ListedSignatory] = field(default_factory=list)  # in letter order
    pending: list[dict[str, Any]] = field(default_factory=list)
    not_signed: list[ListedSignatory] = field(default_factory=list)  # in letter order
    version: int = 1  # the current text's number (DESIGN.md §9)
    # signed an earlier text, not re-confirmed: not counted (names for coordinators only)
    awaiting_reconfirmation: list[ListedSignatory] = field(default_factory=list)
    detailed: bool = False
    names_visible: bool = False
    names_omitted: int = 0  # names not listed for a member (too many); counts still shown
    signed_by: dict[str, str] = field(default_factory=dict)  # member_id -> staff member_id
    awaiting_member: list[str] = field(default_factory=list)  # staff signed, member to confirm
    # campaigns (DESIGN.md §8): what members may see, leads not signed, publication
    visibility: str = "public"
    counts_visible: bool = True
    leads_not_signed: list[ListedSignatory] = field(default_factory=list)  # in leads' order
    embargo: datetime | None = None
    published_at: datetime | None = None

    @property
    def embargo_text(self) -> str:
        """When the names will be published, while an embargo holds them back; else ""."""
        if self.embargo is None or self.published_at is not None:
            return ""
        return format_utc(self.embargo)

    def campaign_json(self) -> dict[str, Any]:
        return {
            "visibility": self.visibility,
            "leads_not_signed": [s.member_id for s in self.leads_not_signed],
            "embargo": iso_utc(self.embargo) if self.embargo else None,
            "published_at": iso_utc(self.published_at) if self.published_at else None,
        }

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
                    "signed_by": self.signed_by.get(s.member_id),
                }
                for s in self.signatories
            ],
            "awaiting_member": self.awaiting_member,
            "version": self.version,
            "awaiting_reconfirmation": [s.member_id for s in self.awaiting_reconfirmation],
            "pending": self.pending,
            **self.campaign_json(),
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
    elif letter_visibility(letter, settings) == "private":
        counts = {}  # members see whether they signed and the deadline: not even a count
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
        version=letter.version_number,
    )
    _apply_visibility(view, letter=letter, settings=settings, coordinator=coordinator)
    if asker is not None and asker.id is not None:
        mine = signatures.active_signature(session, letter_pk=letter.id, member_pk=asker.id)
        # one their staff gave that awaits their confirmation is not theirs yet
        view.asker_signature = mine if mine is not None and not mine.awaiting_member else None
        view.asker_must_reconfirm = mine is not None and mine.awaiting_reconfirmation
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
        view.awaiting_reconfirmation = in_letter_order(
            signatures.awaiting_reconfirmation(session, letter_pk=letter.id)
        )
        view.awaiting_member = signatures.awaiting_members(session, letter_pk=letter.id)
        if signing_details:
            view.signed_by = signatures.proxy_signers(session, letter_pk=letter.id)
        _leads_not_signed(view, letter=letter)
    return view


def _apply_visibility(
    view: StatusView, *, letter: Letter, settings: Settings, coordinator: bool
) -> None:
    """public: names and counts; counts: counts by group; private: neither (DESIGN.md §8).
    Coordinators see everything."""
    view.visibility = letter_visibility(letter, settings)
    view.names_visible = coordinator or view.visibility == "public"
    view.counts_visible = coordinator or view.visibility != "private"
    view.embargo = letter.embargo
    view.published_at = letter.published_at


def _leads_not_signed(view: StatusView, *, letter: Letter) -> None:
    """The leads who have not signed, in the order listed: the compiled letter will not print
    them, which coordinators must know before the deadline, not after."""
    if not letter.leads:
        return
    missing = {person.member_id: person for person in view.not_signed}
    view.leads_not_signed = [missing[m] for m in letter.leads if m in missing]
