"""Letters and their lifecycle: draft -> open -> closed, with the one compilation at close."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, update
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.compile import (
    FORMATS,
    LetterText,
    render_document,
    render_letter,
    sha256_hex,
    signatory_lines,
)
from bot.config import OutputSettings
from bot.letterfile import LetterFileError, LetterSource, check_embargo, letter_version
from bot.models import (
    Compilation,
    CompiledFile,
    Letter,
    LetterState,
    LetterVersion,
    Member,
    Post,
    Reminder,
    Role,
)
from bot.names import SignatoryGroup, signatory_blocks
from bot.receipts import build_receipt
from bot.store import audit, versions
from bot.store.signatures import Lapsed, lapse_signatures, move_to_version, signatories

if TYPE_CHECKING:
    from bot.pdf import PrintOptions


_LETTER_BY_SLUG = select(Letter).where(col(Letter.slug) == bindparam("slug"))  # built once
_LETTERS = "cosign_letters_by_slug"  # session.info: (transaction, {slug: letter}) found in it
_IN_CHANNEL = "cosign_open_in_channel"  # session.info: (transaction, {(platform, channel): …})
_LOCKED = "cosign_locked_letters"  # session.info, PostgreSQL: (transaction, {id: exclusive})


def _this_transaction(session: Session, key: str) -> dict[Any, Any]:
    """What `key` remembers for the session's current transaction (empty in a new one; a
    rollback, even of a savepoint, forgets it: `_forget_letters`). The transaction is begun
    first, as the query that follows would: a memo made before it began would be dropped."""
    session.connection()
    transaction = session.get_transaction()
    found: tuple[object, dict[Any, Any]] | None = session.info.get(key)
    if found is None or found[0] is not transaction:
        found = session.info[key] = (transaction, {})
    return found[1]


def get_letter(session: Session, *, slug: str) -> Letter | None:
    """The letter by slug. Found once a transaction: the commands of a group commit all name
    the same letter, and the query returned the session's own object again anyway (its row
    lock, where one is needed, re-reads it: `lock_letter`)."""
    found: dict[str, Letter] = _this_transaction(session, _LETTERS)
    letter = found.get(slug)
    if letter is not None and letter in session and letter.slug == slug:
        return letter
    letter = session.exec(_LETTER_BY_SLUG, params={"slug": slug}).first()
    if letter is not None:
        found[slug] = letter
    return letter


@sa_event.listens_for(Session, "after_soft_rollback")
def _forget_letters(session: Session, previous_transaction: object) -> None:
    """A rollback (even of a savepoint) may undo what the letters found were read under, and
    releases the row locks taken since the savepoint."""
    session.info.pop(_LETTERS, None)
    session.info.pop(_IN_CHANNEL, None)
    session.info.pop(_LOCKED, None)


def lock_letter(session: Session, *, letter: Letter, exclusive: bool = False) -> Letter:
    """Lock the letter's row until the transaction ends, and re-read it under the lock.

    PostgreSQL runs READ COMMITTED: a state read with a plain SELECT may be stale by the time the
    transaction writes. Signing takes the row FOR SHARE (signers do not block each other); closing,
    updating and extending take it exclusively, so a signature commits wholly before a close
    compiles, or sees the letter closed. SQLite needs nothing: every transaction took the write
    lock at BEGIN IMMEDIATE, before it read anything, so what it read is current.
    """
    if session.get_bind().dialect.name == "sqlite":
        return letter  # the transaction already holds the database's write lock
    held: dict[int | None, bool] = _this_transaction(session, _LOCKED)
    mode = held.get(letter.id)
    if mode is not None and (mode or not exclusive):
        # Locked earlier in this transaction (a group commit's earlier command): nobody else
        # can have changed the row since, and this session's own changes are in `letter`.
        return letter
    query = (
        select(Letter)
        .where(col(Letter.id) == letter.id)
        .with_for_update(read=not exclusive)
        .execution_options(populate_existing=True)
    )
    session.exec(query).one()
    held[letter.id] = exclusive
    return letter


def list_letters(session: Session, *, state: str | None = None) -> Sequence[Letter]:
    query = select(Letter)
    if state is not None:
        query = query.where(col(Letter.state) == state)
    return session.exec(query.order_by(col(Letter.deadline), col(Letter.slug))).all()


def create_letter(
    session: Session, *, source: LetterSource, deadline: datetime, actor: str
) -> Letter | None:
    """A new draft; None when the slug is taken."""
    if get_letter(session, slug=source.slug) is not None:
        return None
    letter = Letter(
        slug=source.slug,
        title=source.title,
        date=source.date,
        addressees=source.addressees,
        body=source.body,
        closing=source.closing,
        signed_by=source.signed_by,
        template=source.template,
        proxy=source.proxy,
        deadline=deadline,
        state=LetterState.draft.value,
        version=source.version,
        created_by=actor,
    )
    campaign = _apply_campaign(session, letter=letter, source=source, deadline=deadline)
    try:
        with session.begin_nested():
            session.add(letter)
    except IntegrityError:
        return None
    versions.add_version(session, letter=letter, minor=False, actor=actor, at=letter.created_at)
    audit.append(
        session,
        actor=actor,
        action="letter.created",
        letter_slug=letter.slug,
        detail={"version": letter.version, "deadline": deadline.isoformat(), **campaign},
    )
    return letter


@dataclass(frozen=True)
class TextUpdate:
    """What `update_letter` did: the earlier version when the text changed (else None), and the
    signatures that stopped counting (a material change of an open letter)."""

    letter: Letter
    previous: LetterVersion | None
    current: LetterVersion | None
    lapsed: list[Lapsed]
    moved: int  # signatures moved to the new text (a minor change)
    changes: dict[str, Any]


def update_letter(
    session: Session,
    *,
    letter: Letter,
    source: LetterSource,
    deadline: datetime | None,
    actor: str,
    at: datetime,
    minor: bool = False,
) -> TextUpdate | None:
    """Replace a draft's or open letter's text (checked under its row lock); None once closed.

    A new text is a new version (DESIGN.md §9). On an open letter a material change (the
    default) makes the signatures given to earlier texts stop counting until re-confirmed; a
    minor one moves them to the new text. Both in this transaction, under the letter's exclusive
    lock, so a signature racing the update is either on the old text (and lapses) or the new.
    """
    lock_letter(session, letter=letter, exclusive=True)
    if letter.state == LetterState.closed.value:
        return None
    changes = _apply_campaign(
        session, letter=letter, source=source, deadline=deadline or letter.deadline
    )
    names = ("title", "date", "addressees", "body", "closing", "signed_by", "template", "proxy")
    for name in names:
        value = getattr(source, name)
        if getattr(letter, name) != value:
            setattr(letter, name, value)
            changes[name] = "changed"
    if deadline is not None and deadline != letter.deadline:
        changes["deadline"] = deadline.isoformat()
        letter.deadline = deadline
    assert letter.id is not None
    previous = current = None
    lapsed: list[Lapsed] = []
    moved = 0
    if letter.version != source.version:
        previous = versions.get_version(
            session, letter_pk=letter.id, number=letter.version_number
        )
        changes["version"] = letter.version_number + 1
        changes["from_sha256"] = letter.version
        changes["sha256"] = source.version
        letter.version = source.version
        letter.version_number += 1
        session.add(letter)
        current = versions.add_version(session, letter=letter, minor=minor, actor=actor, at=at)
        if letter.state == LetterState.open.value:
            changes["change"] = "minor" if minor else "material"
            if minor:
                moved = move_to_version(session, letter=letter)
                changes["moved"] = moved
            else:
                lapsed = lapse_signatures(session, letter=letter)
                changes["awaiting_reconfirmation"] = len(lapsed)
    if changes:
        letter.updated_at = at
        session.add(letter)
        audit.append(
            session, actor=actor, action="letter.updated", letter_slug=letter.slug, detail=changes
        )
    return TextUpdate(letter, previous, current, lapsed, moved, changes)


def _apply_campaign(
    session: Session, *, letter: Letter, source: LetterSource, deadline: datetime
) -> dict[str, object]:
    """Set leads, visibility and embargo from the file (DESIGN.md §8); the changes, for the audit.

    Refuses (LetterFileError, before anything is written) a lead who is not a roster member and
    an embargo before the deadline the letter will have. A file without `visibility` leaves an
    open letter's as it was fixed when posted.
    """
    check_embargo(source.embargo, deadline)
    if source.leads:
        found = {
            member_id: role
            for member_id, role in session.exec(
                select(Member.member_id, Member.role).where(col(Member.member_id).in_(source.leads))
            ).all()
        }
        for member_id in source.leads:
            if found.get(member_id) != Role.member.value:
                what = "is not on the roster" if member_id not in found else "cannot sign"
                raise LetterFileError(f"front matter: leads: {member_id!r} {what}")
    visibility = source.visibility or (
        letter.visibility if letter.state == LetterState.open.value else ""
    )
    changes: dict[str, object] = {}
    for name, value in (
        ("leads", list(source.leads)),
        ("visibility", visibility),
        ("embargo", source.embargo),
    ):
        if getattr(letter, name) != value:
            setattr(letter, name, value)
            changes[name] = value.isoformat() if isinstance(value, datetime) else value
    return changes


def open_letter(
    session: Session, *, letter: Letter, actor: str, at: datetime, visibility: str = "public"
) -> bool:
    """draft -> open; False when it was not a draft (already open is fine for re-posting).

    A letter whose file does not say its visibility gets `visibility` ([letters].visibility)
    now, fixed from when members first see it: counters and status then always agree.
    """
    result = session.execute(
        update(Letter)
        .where(col(Letter.id) == letter.id, col(Letter.state) == LetterState.draft.value)
        .values(state=LetterState.open.value, opened_at=at, updated_at=at)
    )
    session.execute(
        update(Letter)
        .where(col(Letter.id) == letter.id, col(Letter.visibility) == "")
        .values(visibility=visibility)
    )
    session.refresh(letter)
    session.info.pop(_IN_CHANNEL, None)  # open now: found in its channels
    if result.rowcount:  # type: ignore[attr-defined]
        audit.append(
            session,
            actor=actor,
            action="letter.opened",
            letter_slug=letter.slug,
            detail={"visibility": letter.visibility},
        )
        return True
    return False


def extend_deadline(
    session: Session, *, letter: Letter, deadline: datetime, actor: str, at: datetime
) -> Letter | None:
    """Move the deadline of a letter that is not closed (checked under its row lock); else None."""
    lock_letter(session, letter=letter, exclusive=True)
    if letter.state == LetterState.closed.value:
        return None
    previous = letter.deadline
    letter.deadline = deadline
    letter.updated_at = at
    session.add(letter)
    audit.append(
        session,
        actor=actor,
        action="letter.deadline_moved",
        letter_slug=letter.slug,
        detail={"from": previous.isoformat(), "to": deadline.isoformat()},
    )
    return letter


def letter_text(letter: Letter) -> LetterText:
    return LetterText(
        slug=letter.slug,
        title=letter.title,
        date=letter.date,
        addressees=list(letter.addressees),
        body=letter.body,
        closing=letter.closing,
        signed_by=letter.signed_by,
        leads=list(letter.leads or ()),
    )


def close_letter(
    session: Session,
    *,
    letter: Letter,
    actor: str,
    at: datetime,
    output: OutputSettings | None = None,
) -> Compilation | None:
    """Atomically close an open letter and compile it; None when someone else already closed it.

    The conditional UPDATE is the one gate: of two bots (or a bot and the CLI) racing here, only the
    one whose UPDATE matched the open row compiles, in the same transaction as the state change.
    Every format is made here, pdf and docx included (`output`: `[output]`, defaults if None),
    and the receipt names the `letter.closed` event appended in this same transaction.
    """
    result = session.execute(
        update(Letter)
        .where(col(Letter.id) == letter.id, col(Letter.state) == LetterState.open.value)
        .values(state=LetterState.closed.value, closed_at=at, updated_at=at)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        session.refresh(letter)
        return None
    session.refresh(letter)
    assert letter.id is not None
    people = signatories(session, letter_pk=letter.id)
    text = letter_text(letter)
    groups = signatory_blocks(people, text.leads)
    lines = signatory_lines(groups)
    output = output or OutputSettings()
    # Typst releases the GIL: the PDF is typeset in a thread while the other formats render.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cosign-pdf") as pool:
        pdf = pool.submit(_pdf, text, lines, output, at)
        outputs = {fmt: render_letter(text, people, fmt, groups=groups) for fmt in FORMATS}
        plain = _plain_options(output.page_size)
        docx = render_document(text, lines, "docx", options=plain, at=at)
        pdf_bytes, options, warnings = pdf.result()
    documents = {"pdf": pdf_bytes, "docx": docx}
    warnings += _font_warnings(groups, options)
    digests = {fmt: sha256_hex(body) for fmt, body in outputs.items()}
    digests |= {fmt: sha256_hex(data) for fmt, data in documents.items()}
    compilation = Compilation(
        letter_pk=letter.id,
        compiled_at=at,
        signatory_count=len(people),
        outputs=outputs,
        sha256=digests,
        warnings=warnings,
    )
    session.add(compilation)
    session.flush()
    assert compilation.id is not None
    for fmt, data in documents.items():
        session.add(
            CompiledFile(
                compilation_pk=compilation.id,
                format=fmt,
                sha256=digests[fmt],
                size=len(data),
                data=data,
            )
        )
    closed = audit.append(
        session,
        actor=actor,
        action="letter.closed",
        letter_slug=letter.slug,
        detail={
            "signatures": len(people),
            "sha256": digests,
            "version": letter.version_number,
            "text_sha256": letter.version,
        },
    )
    compilation.receipt = build_receipt(
        slug=letter.slug,
        version=letter.version_number,
        text_sha256=letter_version(
            title=letter.title,
            date=letter.date,
            addressees=list(letter.addressees),
            body=letter.body,
            closing=letter.closing,
            signed_by=letter.signed_by,
        ),
        signatories=len(people),
        outputs=digests,
        head_seq=closed.seq,
        head_hash=closed.hash,
        compiled_at=at,
    )
    session.add(compilation)
    session.flush()
    return compilation


def _pdf(
    text: LetterText, lines: list[list[str]], output: OutputSettings, at: datetime
) -> tuple[bytes, PrintOptions, list[dict[str, Any]]]:
    """The PDF, the options it was made with, and a warning if a letterhead or font failed.

    A close is never refused for those (the deadline must close the letter): the PDF is made
    without them then, and the coordinators' warning says so.
    """
    from bot.pdf import PdfError, PrintOptions

    options = PrintOptions.from_settings(output)
    try:
        return render_document(text, lines, "pdf", options=options, at=at), options, []
    except PdfError as exc:
        plain = PrintOptions(page_size=options.page_size)
        pdf = render_document(text, lines, "pdf", options=plain, at=at)
        return pdf, plain, [{"kind": "pdf", "message": f"{exc}; the PDF was made without it"}]


def _plain_options(page_size: str) -> PrintOptions:
    """Print options with the page size alone (the DOCX uses nothing else); imported here, as
    bot.pdf loads typst and fontTools, which most commands never need."""
    from bot.pdf import PrintOptions

    return PrintOptions(page_size=page_size)


def _font_warnings(groups: list[SignatoryGroup], options: PrintOptions) -> list[dict[str, Any]]:
    """Names the PDF's fonts cannot draw, for the CLI and the coordinators' closing summary."""
    from bot.fonts import unprintable

    return [
        {"kind": "font", "message": person.message(), **person.as_json()}
        for person in unprintable(groups, options.font_set())
    ]


def get_compilation(session: Session, *, letter_pk: int) -> Compilation | None:
    return session.exec(select(Compilation).where(Compilation.letter_pk == letter_pk)).first()


def compiled_files(session: Session, *, compilation_pk: int) -> dict[str, bytes]:
    """A compilation's binary outputs (pdf, docx) by format; {} for one made before them."""
    rows = session.exec(
        select(CompiledFile.format, CompiledFile.data).where(
            CompiledFile.compilation_pk == compilation_pk
        )
    ).all()
    return {fmt: bytes(data) for fmt, data in rows}


@dataclass(frozen=True)
class OutputMatch:
    """Which stored output a file is byte-identical to."""

    slug: str
    version: str
    format: str
    compiled_at: datetime


def find_output(session: Session, *, data: bytes) -> OutputMatch | None:
    """The stored compiled output whose bytes are exactly `data`, if any (`cosign verify`)."""
    digest = sha256_hex(data)
    for compilation in session.exec(select(Compilation).order_by(col(Compilation.id))).all():
        fmt = next((f for f, value in compilation.sha256.items() if value == digest), None)
        if fmt is None:
            continue
        if fmt in compilation.outputs:
            stored = compilation.outputs[fmt].encode("utf-8")
        else:
            assert compilation.id is not None
            stored = compiled_files(session, compilation_pk=compilation.id).get(fmt, b"")
        if stored != data:
            continue
        letter = session.get(Letter, compilation.letter_pk)
        assert letter is not None
        version = str((compilation.receipt or {}).get("version") or letter.version_number)
        return OutputMatch(letter.slug, version, fmt, compilation.compiled_at)
    return None


def compilations_without_files(session: Session) -> Sequence[Compilation]:
    query = select(Compilation).where(col(Compilation.files_written_at).is_(None))
    return session.exec(query).all()


def due_letters(session: Session, *, now: datetime) -> Sequence[Letter]:
    query = select(Letter).where(
        col(Letter.state) == LetterState.open.value, col(Letter.deadline) <= now
    )
    return session.exec(query).all()


def due_publications(session: Session, *, now: datetime) -> Sequence[Letter]:
    """Closed letters whose embargo has ended and whose names have not been published yet."""
    query = select(Letter).where(
        col(Letter.state) == LetterState.closed.value,
        col(Letter.embargo).is_not(None),
        col(Letter.embargo) <= now,
        col(Letter.published_at).is_(None),
    )
    return session.exec(query).all()


def upsert_post(session: Session, *, letter_pk: int, platform: str, channel: str) -> Post:
    post = session.exec(
        select(Post).where(
            Post.letter_pk == letter_pk, Post.platform == platform, Post.channel == channel
        )
    ).first()
    if post is None:
        post = Post(letter_pk=letter_pk, platform=platform, channel=channel)
        session.add(post)
        session.flush()
        session.info.pop(_IN_CHANNEL, None)  # a letter more in this channel
    return post


def posts_of(session: Session, *, letter_pk: int) -> Sequence[Post]:
    return session.exec(
        select(Post).where(Post.letter_pk == letter_pk).order_by(col(Post.id))
    ).all()


# Built once (every command without a SLUG runs it): building it cost as much as running it.
_OPEN_IN_CHANNEL = (
    select(Letter)
    .join(Post, col(Post.letter_pk) == col(Letter.id))
    .where(
        Post.platform == bindparam("platform"),
        Post.channel == bindparam("channel"),
        col(Letter.state) == LetterState.open.value,
    )
)


def open_letters_in_channel(session: Session, *, platform: str, channel: str) -> Sequence[Letter]:
    """The open letters posted in a channel. Found once a transaction, like get_letter: the
    signatures of a group commit come from a few channels. Opening a letter or posting one
    forgets what was found (as a rollback does); a letter closed meanwhile is the same object,
    refreshed, and is left out."""
    found: dict[tuple[str, str], list[Letter]] = _this_transaction(session, _IN_CHANNEL)
    where = (platform, channel)
    known = found.get(where)
    if known is None or any(letter not in session for letter in known):
        params = {"platform": platform, "channel": channel}
        known = found[where] = list(session.exec(_OPEN_IN_CHANNEL, params=params).all())
    return [letter for letter in known if letter.state == LetterState.open.value]


def letter_for_message(session: Session, *, platform: str, message_id: str) -> Letter | None:
    query = (
        select(Letter)
        .join(Post, col(Post.letter_pk) == col(Letter.id))
        .where(Post.platform == platform, Post.message_id == message_id)
    )
    return session.exec(query).first()


def record_reminder(
    session: Session, *, letter: Letter, offset_label: str, status: str, at: datetime
) -> Reminder | None:
    """Insert-once per (letter, offset, deadline); None if it was already sent or skipped."""
    assert letter.id is not None
    existing = session.exec(
        select(Reminder).where(
            Reminder.letter_pk == letter.id,
            Reminder.offset_label == offset_label,
            Reminder.deadline == letter.deadline,
        )
    ).first()
    if existing is not None:
        return None
    reminder = Reminder(
        letter_pk=letter.id,
        offset_label=offset_label,
        deadline=letter.deadline,
        status=status,
        at=at,
    )
    try:
        with session.begin_nested():
            session.add(reminder)
    except IntegrityError:
        return None
    return reminder
