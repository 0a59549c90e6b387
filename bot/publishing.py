"""What chat adapters need from the store to publish letters: views to render, places to record.

All functions are synchronous (call them with ``asyncio.to_thread``) and return plain dataclasses,
so adapters never hold a session or a model across an await.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from bot.compile import render_letter
from bot.db import Database
from bot.models import Letter, Post
from bot.models._types import utcnow
from bot.store import audit, letters, members, signatures, versions
from bot.timeutil import format_utc


@dataclass(frozen=True)
class LetterView:
    """A letter as a post shows it: the text without signatories, the count and the state."""

    slug: str
    title: str
    state: str
    deadline: datetime
    deadline_text: str
    closed_at: datetime | None
    count: int | None  # None: the letter is private (DESIGN.md §8), posts show no number
    text: str  # addressees, subject, date, body, closing, signed_by (plain text, as compiled)
    body: str  # the Markdown body alone
    version: int = 1  # the text's version number (DESIGN.md §9)
    change_note: str = ""  # once the text changed: a line saying so, shown with the post


@dataclass(frozen=True)
class PostView:
    post_id: int
    platform: str
    channel: str
    message_id: str | None
    letter: LetterView
    shown_version: int | None = None  # the text version the post shows (None: unknown)


@dataclass(frozen=True)
class CompiledView:
    slug: str
    title: str
    count: int
    compiled_at: datetime
    outputs: dict[str, str]
    # What the coordinators' closing message witnesses (DESIGN.md §10): the PDF's SHA-256 and
    # the audit head at close; and the names the PDF's fonts cannot draw.
    pdf_sha256: str | None = None
    audit_head: str | None = None  # "SEQ:first 16 hex digits", as `audit --anchor` takes it
    unprintable: tuple[str, ...] = ()

    def witness(self) -> str:
        """The closing message's record of what was published: chat keeps a copy of it."""
        parts = []
        if self.pdf_sha256:
            parts.append(f"PDF SHA-256 {self.pdf_sha256}")
        if self.audit_head:
            parts.append(f"audit head {self.audit_head}")
        text = ("; ".join(parts) + ".") if parts else ""
        if self.unprintable:
            text += (" " if text else "") + (
                "The PDF's fonts cannot draw: " + "; ".join(self.unprintable)
                + " (add a font with [output].fonts and recompile a preview to check)."
            )
        return text


def _shown_count(session: Session, letter: Letter) -> int | None:
    """The count a post shows: none for a private letter, whose members see only their own."""
    assert letter.id is not None
    if letter.visibility == "private":
        return None
    return signatures.count_active(session, letter_pk=letter.id)


def _letter_view(session: Session, letter: Letter) -> LetterView:
    assert letter.id is not None
    return LetterView(
        slug=letter.slug,
        title=letter.title,
        state=letter.state,
        deadline=letter.deadline,
        deadline_text=format_utc(letter.deadline),
        closed_at=letter.closed_at,
        count=_shown_count(session, letter),
        text=render_letter(letters.letter_text(letter), [], "txt").rstrip("\n"),
        body=letter.body,
        version=letter.version_number,
        change_note=versions.change_note(session, letter=letter),
    )


def letter_post(database: Database, *, slug: str, platform: str, channel: str) -> PostView | None:
    """The post a `post_letter` outbox message should create (None if the letter is gone)."""
    with database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        if letter is None or letter.id is None:
            return None
        post = letters.upsert_post(session, letter_pk=letter.id, platform=platform, channel=channel)
        assert post.id is not None
        return PostView(post.id, platform, channel, post.message_id, _letter_view(session, letter))


def letter_view(database: Database, *, slug: str) -> LetterView | None:
    """A letter as platforms show it, read only: a button click elsewhere records no post."""
    with database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        if letter is None or letter.id is None:
            return None
        return _letter_view(session, letter)


def record_post(
    database: Database,
    *,
    post_id: int,
    message_id: str,
    count: int | None,
    state: str,
    version: int | None = None,
) -> None:
    """Remember where the letter was posted, so counters and closing can edit it."""
    with database.session() as session:
        post = session.get(Post, post_id)
        if post is None:
            return
        post.message_id = message_id
        post.posted_at = post.updated_at = utcnow()
        post.shown_count = count
        post.shown_state = state
        post.shown_version = version
        session.add(post)


def stale_posts(database: Database, *, platform: str) -> list[PostView]:
    """Posts whose shown count, state or text version differs from the truth (the live
    counter's work list): a changed text is shown by editing the post like a count."""
    with database.session() as session:
        rows = session.exec(
            select(Post, Letter)
            .join(Letter, col(Letter.id) == col(Post.letter_pk))
            .where(Post.platform == platform, col(Post.message_id).is_not(None))
            .where((col(Post.shown_state).is_(None)) | (col(Post.shown_state) != "closed"))
        ).all()
        stale: list[PostView] = []
        counts: dict[int, int | None] = {}
        for post, letter in rows:
            assert post.id is not None and letter.id is not None
            if letter.id not in counts:
                counts[letter.id] = _shown_count(session, letter)
            if (
                post.shown_count == counts[letter.id]
                and post.shown_state == letter.state
                and (post.shown_version or 1) == letter.version_number
            ):
                continue  # up to date: no need to render the letter's text on every pass
            view = _letter_view(session, letter)
            stale.append(
                PostView(
                    post.id, post.platform, post.channel, post.message_id, view, post.shown_version
                )
            )
        return stale


def mark_post_shown(
    database: Database, *, post_id: int, count: int | None, state: str, version: int | None = None
) -> None:
    with database.session() as session:
        post = session.get(Post, post_id)
        if post is None:
            return
        post.shown_count = count
        post.shown_state = state
        if version is not None:
            post.shown_version = version
        post.updated_at = utcnow()
        session.add(post)


def compiled(database: Database, *, slug: str) -> CompiledView | None:
    with database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        if letter is None or letter.id is None:
            return None
        compilation = letters.get_compilation(session, letter_pk=letter.id)
        if compilation is None:
            return None
        receipt = compilation.receipt or {}
        head = receipt.get("audit_head") or {}
        unprintable = tuple(
            f"{w.get('member_id')} ({w.get('characters')})"
            for w in compilation.warnings or []
            if w.get("kind") == "font"
        )
        return CompiledView(
            letter.slug,
            letter.title,
            compilation.signatory_count,
            compilation.compiled_at,
            dict(compilation.outputs),
            pdf_sha256=compilation.sha256.get("pdf"),
            audit_head=f"{head['seq']}:{str(head['hash'])[:16]}" if head.get("hash") else None,
            unprintable=unprintable,
        )


def compiled_pdf(database: Database, *, slug: str) -> bytes | None:
    """The published PDF's bytes (None before close, or for a letter closed without one)."""
    with database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        if letter is None or letter.id is None:
            return None
        compilation = letters.get_compilation(session, letter_pk=letter.id)
        if compilation is None or compilation.id is None:
            return None
        return letters.compiled_files(session, compilation_pk=compilation.id).get("pdf")


def member_label(database: Database, *, platform: str, external_id: str) -> str | None:
    """'Senator Eric Abetz (Australia)' for a linked account, for confirmations; None if unknown."""
    with database.session() as session:
        member = members.member_for_account(session, platform=platform, external_id=external_id)
        if member is None:
            return None
        name = member.rendered_name()
        return f"{name} ({member.group})" if member.group else name


def link_by_email(database: Database, *, platform: str, external_id: str, email: str) -> bool:
    """Link an unknown account to the one linkable roster member with this e-mail address."""
    with database.session() as session:
        if members.get_identity(session, platform=platform, external_id=external_id) is not None:
            return False
        member = members.linkable_by_email(session, platform=platform, email=email)
        if member is None:
            return False
        members.link_identity(
            session,
            platform=platform,
            external_id=external_id,
            member=member,
            linked_via="email",
            linked_by="email-match",
        )
        audit.append(
            session,
            actor=f"{platform}:{external_id}",
            action="identity.linked",
            member_id=member.member_id,
            detail={"platform": platform, "account": external_id, "via": "email"},
        )
        return True
