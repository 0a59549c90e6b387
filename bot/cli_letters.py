"""`cosign letter …`: create, update (versions), diff, list, show, post, close, extend, confirm,
void, publish."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bot import textdiff
from bot.campaign import (
    CampaignError,
    close_and_announce,
    extend_letter,
    parse_target,
    post_letter,
    publish_letter,
    require_letter,
)
from bot.cli_support import (
    CLI_ACTOR,
    WhenOption,
    deadline_from,
    fail,
    opened,
    read_text,
    table,
    warn,
)
from bot.compile import (
    render_letter,
)
from bot.letterfile import parse_letter
from bot.models import LetterState
from bot.models._types import utcnow
from bot.store import letters as letter_store
from bot.store import members as member_store
from bot.store.letters import TextUpdate
from bot.timeutil import format_utc, time_left
from bot.versions import VersionError, change_text, diff_versions

letter_app = typer.Typer(no_args_is_help=True, help="Letters: create, post, close, extend.")


@letter_app.command("create")
def letter_create(file: Path, deadline: WhenOption = None) -> None:
    """Create a draft letter from a Markdown file with TOML front matter."""
    text = read_text(file)
    with opened() as (config, database), database.session() as session:
        now = utcnow()
        source = parse_letter(text, zone=config.letters.zone, now=now)
        when = deadline_from(deadline, config, now) if deadline else source.deadline
        assert when is not None
        if when <= now:
            fail(
                f"the deadline {format_utc(when)} is in the past; give a later one with "
                "--deadline (e.g. --deadline +3d)"
            )
        letter = letter_store.create_letter(session, source=source, deadline=when, actor=CLI_ACTOR)
        if letter is None:
            fail(f"a letter with slug {source.slug!r} already exists; use 'cosign letter update'")
    typer.echo(f"created draft {source.slug}: deadline {format_utc(when)}")


@letter_app.command("update")
def letter_update(
    file: Path,
    deadline: WhenOption = None,
    minor: Annotated[
        bool,
        typer.Option(
            "--minor",
            help="A typo-level change: signatures move to the new text without asking anyone; "
            "the letter's channels get a notice with the diff.",
        ),
    ] = False,
) -> None:
    """Replace a draft or open letter's text (and deadline) from its file.

    A new text is a new version. On an open letter the change is material unless --minor:
    signatures given to the earlier text stop counting until their signers re-confirm, and each
    signer gets a direct message with the change.
    """
    text = read_text(file)
    with opened() as (config, database), database.session() as session:
        now = utcnow()
        source = parse_letter(text, zone=config.letters.zone, now=now)
        letter = require_letter(session, source.slug)
        if letter.state == LetterState.closed.value:
            fail(f"{letter.slug} is closed; its compiled text is final")
        when = deadline_from(deadline, config, now) if deadline else None
        if when is not None and when <= now:
            fail(f"the deadline {format_utc(when)} is in the past")
        try:
            update = change_text(
                session,
                letter=letter,
                source=source,
                deadline=when,
                minor=minor,
                actor=CLI_ACTOR,
                now=now,
            )
        except VersionError as exc:
            fail(str(exc))
        if update is None:  # closed since the check above, by the deadline or another process
            fail(f"{letter.slug} is closed; its compiled text is final")
    typer.echo(_update_summary(update))


def _update_summary(update: TextUpdate) -> str:
    letter = update.letter
    if update.current is None:
        return f"updated {letter.slug} (text unchanged: still version {letter.version_number})"
    line = f"updated {letter.slug}: version {letter.version_number} ({letter.version[:16]})"
    if letter.state != LetterState.open.value:
        return line
    if update.lapsed:
        return (
            f"{line}; a material change: {len(update.lapsed)} signature"
            f"{'' if len(update.lapsed) == 1 else 's'} no longer count until re-confirmed, "
            "and each signer is sent the change by direct message"
        )
    if update.moved:
        return f"{line}; a minor change: {update.moved} signature(s) moved to it"
    return line


@letter_app.command("diff")
def letter_diff(
    slug: str,
    from_: Annotated[
        int | None,
        typer.Option("--from", help="The earlier version (default: the one before --to)."),
    ] = None,
    to: Annotated[
        int | None, typer.Option("--to", help="The later version (default: the current one).")
    ] = None,
) -> None:
    """Print the word diff between two versions of a letter's text ([-removed-] {+added+})."""
    with opened() as (_, database), database.session() as session:
        letter = require_letter(session, slug)
        try:
            change = diff_versions(session, letter=letter, old=from_, new=to)
        except VersionError as exc:
            fail(str(exc))
    typer.echo(change.header())
    typer.echo(textdiff.plain(change.pieces))


@letter_app.command("list")
def letter_list() -> None:
    """List letters with their state, deadline and signatures."""
    from bot.store.signatures import count_active

    with opened() as (_, database), database.session() as session:
        now = utcnow()
        rows = []
        for letter in letter_store.list_letters(session):
            assert letter.id is not None
            rows.append(
                (
                    letter.slug,
                    letter.state,
                    format_utc(letter.deadline),
                    str(count_active(session, letter_pk=letter.id)),
                    time_left(letter.deadline, now) if letter.state != "closed" else "",
                    letter.title,
                )
            )
    table(("slug", "state", "deadline", "signed", "left", "title"), rows)


@letter_app.command("show")
def letter_show(slug: str) -> None:
    """Show a letter's details and text."""
    with opened() as (_, database), database.session() as session:
        letter = require_letter(session, slug)
        posts = letter_store.posts_of(session, letter_pk=letter.id or 0)
        typer.echo(
            f"slug:     {letter.slug}\ntitle:    {letter.title}\nstate:    {letter.state}\n"
            f"deadline: {format_utc(letter.deadline)}\n"
            f"version:  {letter.version_number} ({letter.version})"
        )
        for post in posts:
            typer.echo(
                f"posted:   {post.platform}:{post.channel}"
                + (f" ({post.message_id})" if post.message_id else " (queued)")
            )
        typer.echo("")
        typer.echo(render_letter(letter_store.letter_text(letter), [], "txt"), nl=False)


@letter_app.command("post")
def letter_post(
    slug: str,
    to: Annotated[list[str], typer.Option("--to", help="PLATFORM:CHANNEL, repeatable.")],
) -> None:
    """Open a letter for signing and queue its posts; the running bot delivers them."""
    targets = []
    for raw in to:
        try:
            targets.append(parse_target(raw))
        except CampaignError as exc:
            fail(str(exc))
    with opened() as (config, database), database.session() as session:
        letter = require_letter(session, slug)
        queued = post_letter(
            session, settings=config, letter=letter, targets=targets, actor=CLI_ACTOR, now=utcnow()
        )
    for target in targets:
        typer.echo(f"{'queued' if target in queued else 'already posted'}: {target}")
    typer.echo(f"{slug} is open until {format_utc(letter.deadline)}")


@letter_app.command("close")
def letter_close(slug: str) -> None:
    """Close signing now and compile the letter."""
    with opened() as (config, database), database.session() as session:
        letter = require_letter(session, slug)
        compilation = close_and_announce(
            session, settings=config, letter=letter, actor=CLI_ACTOR, now=utcnow()
        )
        if compilation is None:
            fail(f"{slug} is already closed")
    warn(compilation.warnings or [])
    typer.echo(
        f"closed {slug} with {compilation.signatory_count} signatures; "
        "the running bot writes and announces the compiled letter"
    )


@letter_app.command("extend")
def letter_extend(
    slug: str,
    deadline: Annotated[str, typer.Option("--deadline", help="ISO 8601 or +30m, +2h, +3d.")],
) -> None:
    """Move a letter's deadline."""
    with opened() as (config, database), database.session() as session:
        letter = require_letter(session, slug)
        now = utcnow()
        when = deadline_from(deadline, config, now)
        extend_letter(
            session, settings=config, letter=letter, deadline=when, actor=CLI_ACTOR, now=now
        )
    typer.echo(f"{slug}: deadline is now {format_utc(when)}")


def _member(session: Any, member_id: str) -> Any:
    member = member_store.get_member(session, member_id=member_id)
    if member is None:
        fail(f"no roster member with member_id {member_id!r}")
    return member


@letter_app.command("confirm")
def letter_confirm(slug: str, member_id: str) -> None:
    """Count a signature staff gave for MEMBER_ID that awaits the member (proxy mode confirm)."""
    from bot.staff import confirm_signature

    with opened() as (config, database), database.session() as session:
        letter = require_letter(session, slug)
        member = _member(session, member_id)
        _, staff = confirm_signature(
            session, settings=config, letter=letter, member=member, actor=CLI_ACTOR, now=utcnow()
        )
        by = f" (signed by {staff.member_id})" if staff is not None else ""
    typer.echo(f"{slug}: the signature of {member_id}{by} is confirmed and counts")


@letter_app.command("void")
def letter_void(
    slug: str,
    member_id: str,
    reason: Annotated[
        str, typer.Option("--reason", help="Why the signature was recorded in error (audited).")
    ],
) -> None:
    """Remove a signature recorded in error (not a withdrawal); the member is told why."""
    from bot.staff import void_signature

    with opened() as (_, database), database.session() as session:
        letter = require_letter(session, slug)
        member = _member(session, member_id)
        staff = void_signature(
            session, letter=letter, member=member, reason=reason, actor=CLI_ACTOR, now=utcnow()
        )
        told = member_id + (f" and {staff.member_id}" if staff is not None else "")
    typer.echo(
        f"{slug}: the signature of {member_id} is void; {told} will be told by direct message"
    )


@letter_app.command("publish")
def letter_publish(slug: str) -> None:
    """Publish a closed letter's names in its channels now, before its embargo ends."""
    with opened() as (config, database), database.session() as session:
        letter = require_letter(session, slug)
        if not publish_letter(
            session, settings=config, letter=letter, actor=CLI_ACTOR, now=utcnow()
        ):
            when = format_utc(letter.published_at) if letter.published_at else "its close"
            fail(f"{slug} was already published on {when}; nothing was sent again")
    typer.echo(f"published {slug}: the running bot posts the names in its channels")
