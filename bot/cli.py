"""The `cosign` command line (Typer). Exit codes: 0 ok, 1 refused or bad input, 2 usage."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

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
    status_view,
)
from bot.compile import (
    DOCUMENT_FORMATS,
    FORMATS,
    render_document,
    render_letter,
    sha256_hex,
    signatory_lines,
)
from bot.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings
from bot.db import Database
from bot.letterfile import LetterFileError, parse_letter
from bot.models import Letter, LetterState
from bot.models._types import utcnow
from bot.receipts import AnchorError, parse_anchor
from bot.roster import RosterError, export_roster, import_roster
from bot.store import audit as audit_store
from bot.store import letters as letter_store
from bot.store import members as member_store
from bot.store.letters import TextUpdate
from bot.timeutil import BadTime, format_utc, iso_utc, parse_when, time_left
from bot.versions import VersionError, change_text, diff_versions

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="cosign: co-signatures of open letters on Slack, Matrix and the console.",
)
db_app = typer.Typer(no_args_is_help=True, help="The database.")
roster_app = typer.Typer(no_args_is_help=True, help="The roster of members.")
letter_app = typer.Typer(no_args_is_help=True, help="Letters: create, post, close, extend.")
app.add_typer(db_app, name="db")
app.add_typer(roster_app, name="roster")
app.add_typer(letter_app, name="letter")

T = TypeVar("T")
CLI_ACTOR = "cli"


@dataclass
class State:
    config: Path = DEFAULT_CONFIG_PATH


state = State()


def fail(message: str) -> NoReturn:
    typer.echo(f"cosign: {message}", err=True)
    raise typer.Exit(1)


def settings() -> Settings:
    try:
        return load_settings(state.config)
    except ConfigError as exc:
        fail(str(exc))


@contextmanager
def opened() -> Iterator[tuple[Settings, Database]]:
    """Settings and a migrated database; bad input becomes one line on stderr and exit 1."""
    config = settings()
    database = Database(config.database.url)
    try:
        database.upgrade()
        yield config, database
    except (CampaignError, LetterFileError, BadTime, ConfigError) as exc:
        fail(str(exc))
    except RosterError as exc:
        for problem in exc.problems:
            typer.echo(f"cosign: {problem}", err=True)
        fail(str(exc))
    finally:
        database.dispose()


@app.callback()
def main_options(
    config: Annotated[
        Path,
        typer.Option(
            "--config", envvar="COSIGN_CONFIG", help="Configuration file.", show_default=True
        ),
    ] = DEFAULT_CONFIG_PATH,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    state.config = config
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# --- db --------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations."""
    with opened():
        typer.echo("database is up to date")


# --- roster ----------------------------------------------------------------------------------


@roster_app.command("import")
def roster_import(file: Annotated[Path, typer.Argument(help="Roster CSV (UTF-8).")]) -> None:
    """Import or update the roster; all or nothing, every problem listed with its line."""
    data = _read_bytes(file)
    with opened() as (_, database), database.session() as session:
        result = import_roster(session, data=data, actor=CLI_ACTOR)
    typer.echo(
        f"roster imported: {result.created} new, {result.updated} updated, "
        f"{result.unchanged} unchanged, {len(result.linked)} chat accounts linked"
    )


@roster_app.command("list")
def roster_list() -> None:
    """Print the roster as a table."""
    with opened() as (_, database), database.session() as session:
        rows = [
            (m.member_id, m.role, m.group, m.rendered_name(), "" if m.active else "inactive")
            for m in member_store.list_members(session)
        ]
    _table(("member_id", "role", "group", "name", ""), rows)


@roster_app.command("export")
def roster_export() -> None:
    """Print the roster as CSV in the import format (export then import changes nothing)."""
    with opened() as (_, database), database.session() as session:
        sys.stdout.write(export_roster(session))


# --- letters ---------------------------------------------------------------------------------

WhenOption = Annotated[
    str | None,
    typer.Option(
        "--deadline",
        help="ISO 8601 (read in [letters].timezone without an offset) or relative: +30m, +2h, +3d.",
    ),
]


@letter_app.command("create")
def letter_create(file: Path, deadline: WhenOption = None) -> None:
    """Create a draft letter from a Markdown file with TOML front matter."""
    text = _read_text(file)
    with opened() as (config, database), database.session() as session:
        now = utcnow()
        source = parse_letter(text, zone=config.letters.zone, now=now)
        when = _deadline(deadline, config, now) if deadline else source.deadline
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
    text = _read_text(file)
    with opened() as (config, database), database.session() as session:
        now = utcnow()
        source = parse_letter(text, zone=config.letters.zone, now=now)
        letter = require_letter(session, source.slug)
        if letter.state == LetterState.closed.value:
            fail(f"{letter.slug} is closed; its compiled text is final")
        when = _deadline(deadline, config, now) if deadline else None
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
    _table(("slug", "state", "deadline", "signed", "left", "title"), rows)


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
    _warn(compilation.warnings or [])
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
        when = _deadline(deadline, config, now)
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


# --- status, compile, audit ------------------------------------------------------------------


@app.command("status")
def status(
    slug: str,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """A letter's signatures by group, time left, names, pending accounts and who is missing."""
    with opened() as (config, database), database.session() as session:
        letter = require_letter(session, slug)
        view = status_view(
            session,
            settings=config,
            letter=letter,
            asker=None,
            coordinator=True,
            now=utcnow(),
            signing_details=as_json,
        )
    if as_json:
        typer.echo(json.dumps(view.as_json(), ensure_ascii=False, indent=2))
        return
    from bot.templating import render

    typer.echo(
        render("replies/status.j2", "text", view=view, known=False, signed_at=None), nl=False
    )


@app.command("compile")
def compile_letter(
    slug: str,
    fmt: Annotated[
        str, typer.Option("--format", help="txt, md, html, csv, json, pdf or docx.")
    ] = "txt",
    out: Annotated[Path | None, typer.Option("--out", help="Write to FILE, not stdout.")] = None,
) -> None:
    """A preview while the letter is open; the final text (or pdf/docx bytes) once closed."""
    if fmt not in (*FORMATS, *DOCUMENT_FORMATS):
        choices = ", ".join((*FORMATS, *DOCUMENT_FORMATS))
        typer.echo(f"cosign: --format must be one of {choices}", err=True)
        raise typer.Exit(2)
    if fmt in DOCUMENT_FORMATS and out is None and sys.stdout.isatty():
        typer.echo(f"cosign: --format {fmt} writes a binary file: give --out FILE", err=True)
        raise typer.Exit(2)
    with opened() as (config, database), database.session() as session:
        letter = require_letter(session, slug)
        if fmt in DOCUMENT_FORMATS:
            data, warnings = _document(session, config, letter, fmt)
        else:
            data, warnings = _text_output(session, letter, fmt).encode("utf-8"), []
    if fmt == "pdf":
        _warn(warnings)
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        out.write_bytes(data)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    typer.echo(f"wrote {out}", err=True)


def _text_output(session: Any, letter: Letter, fmt: str) -> str:
    from bot.store.signatures import signatories

    assert letter.id is not None
    compilation = letter_store.get_compilation(session, letter_pk=letter.id)
    if compilation is not None and fmt in compilation.outputs:
        return compilation.outputs[fmt]
    return render_letter(
        letter_store.letter_text(letter), signatories(session, letter_pk=letter.id), fmt
    )


def _document(
    session: Any, config: Settings, letter: Letter, fmt: str
) -> tuple[bytes, list[dict[str, Any]]]:
    """The stored pdf/docx of a closed letter; a preview (with its font warnings) before."""
    from bot.fonts import unprintable
    from bot.names import signatory_blocks
    from bot.pdf import PdfError, PrintOptions
    from bot.store.signatures import signatories

    assert letter.id is not None
    compilation = letter_store.get_compilation(session, letter_pk=letter.id)
    options = PrintOptions.from_settings(config.output)
    text = letter_store.letter_text(letter)
    try:
        if compilation is not None:
            assert compilation.id is not None
            stored = letter_store.compiled_files(session, compilation_pk=compilation.id)
            if fmt in stored:
                return stored[fmt], list(compilation.warnings or [])
            # Closed before pdf/docx existed: made now, from the signatory list it stored.
            lines = _stored_lines(compilation.outputs.get("json", ""))
            at = compilation.compiled_at
            return render_document(text, lines, fmt, options=options, at=at), []
        groups = signatory_blocks(signatories(session, letter_pk=letter.id), text.leads)
        data = render_document(text, signatory_lines(groups), fmt, options=options, at=utcnow())
        if fmt != "pdf":
            return data, []
        found = unprintable(groups, options.font_set())
        return data, [{"kind": "font", "message": person.message()} for person in found]
    except PdfError as exc:
        fail(str(exc))


def _stored_lines(document: str) -> list[list[str]]:
    """The signatory lines of a stored json output, group by group, as they were compiled."""
    try:
        groups = json.loads(document)["groups"]
        return [[f"{s['name']} ({g['group']})" for s in g["signatories"]] for g in groups]
    except (ValueError, KeyError, TypeError):
        fail("the stored compilation has no signatory list to make this format from")


def _warn(warnings: Sequence[dict[str, Any]]) -> None:
    for warning in warnings:
        typer.echo(f"cosign: warning: {warning.get('message', warning)}", err=True)


@app.command("audit")
def audit(
    slug: Annotated[str | None, typer.Argument(help="List this letter's events.")] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check the whole hash chain and every receipt.")
    ] = False,
    anchor: Annotated[
        list[str] | None,
        typer.Option("--anchor", help="SEQ:HASH: an audit head to find in the chain (repeatable)."),
    ] = None,
) -> None:
    """A letter's audit events; --verify checks the whole chain against every receipt and
    --anchor, and exits 1 if anything is broken, deleted or rewritten."""
    if slug is None and not verify and not anchor:
        typer.echo("cosign: give a SLUG to list its events, or --verify / --anchor", err=True)
        raise typer.Exit(2)
    try:
        anchors = [parse_anchor(raw) for raw in anchor or []]
    except AnchorError as exc:
        fail(str(exc))
    verify = verify or bool(anchors)
    with opened() as (_, database), database.session() as session:
        if slug is not None:
            require_letter(session, slug)
            for event in audit_store.list_events(session, letter_slug=slug):
                detail = json.dumps(event.detail, ensure_ascii=False, sort_keys=True)
                typer.echo(
                    f"{event.seq:>6} {iso_utc(event.at)} {event.actor} {event.action}"
                    f"{' ' + event.member_id if event.member_id else ''} {detail}"
                )
        problems = audit_store.verify_chain(session, anchors=anchors) if verify else []
        head = audit_store.chain_head(session)
    if verify:
        if problems:
            for problem in problems:
                typer.echo(f"cosign: audit event {problem.seq}: {problem.reason}", err=True)
            fail(f"the audit chain is broken ({len(problems)} problem(s))")
        where = f" (head {head[0]}:{head[1]})" if head else ""
        typer.echo(f"audit chain verified: intact{where}")


@app.command("verify")
def verify_file(
    file: Annotated[Path, typer.Argument(help="A letter file: pdf, docx, txt, md, html, …")],
) -> None:
    """Say whether FILE is byte-identical to a stored compiled output; exit 1 if it is not."""
    data = _read_bytes(file)
    with opened() as (_, database), database.session() as session:
        match = letter_store.find_output(session, data=data)
    if match is None:
        fail(
            f"{file} is not byte-identical to any compiled output "
            f"(SHA-256 {sha256_hex(data)[:16]}…)"
        )
    typer.echo(
        f"{file} is the {match.format} of {match.slug}, version {match.version}, "
        f"compiled {format_utc(match.compiled_at)}: byte-identical"
    )


# --- running ---------------------------------------------------------------------------------


@app.command("run")
def run() -> None:
    """Run the enabled platforms and the scheduler until SIGINT/SIGTERM."""
    from bot.serve import build_platforms, serve

    with opened() as (config, database):
        platforms = build_platforms(config, console_stdin_required=True)
        asyncio.run(serve(config, database, platforms))


@app.command("console")
def console(
    user: Annotated[
        str | None, typer.Option("--as", help="Who speaks (a member_id, or a coordinator name).")
    ] = None,
    channel: Annotated[str, typer.Option("--channel", help="Channel, e.g. #general.")] = "#general",
) -> None:
    """The console platform alone, on the same database."""
    from bot.platforms.console import ConsolePlatform
    from bot.serve import serve_console

    with opened() as (config, database):
        speaker = user or (
            config.coordinators.console[0] if config.coordinators.console else "coordinator"
        )
        platform = ConsolePlatform(user=speaker, channel=channel)
        asyncio.run(serve_console(config, database, platform))


@app.command("demo")
def demo() -> None:
    """A whole campaign in seconds on a throwaway database (writes nothing outside a temp dir)."""
    from bot.demo import run_demo

    try:
        run_demo()
    except (CampaignError, RosterError, LetterFileError) as exc:
        fail(str(exc))


slack_app = typer.Typer(no_args_is_help=True, help="Slack set-up helpers.")
app.add_typer(slack_app, name="slack")


@slack_app.command("manifest")
def slack_manifest(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Public request URL (HTTP mode), e.g. https://cosign.example.org/slack/events.",
        ),
    ] = None,
) -> None:
    """Print the Slack app manifest (YAML): commands, interactivity, scopes, Socket Mode or URL."""
    from bot.platforms.slack.manifest import manifest, to_yaml

    config = settings()
    if config.slack.mode == "http" and not url:
        fail("slack.mode is http: give the public request URL with --url")
    if url is not None and not url.startswith("https://"):
        fail("--url must be an https:// URL (Slack only calls HTTPS endpoints)")
    typer.echo(to_yaml(manifest(config.slack, url)))


# --- helpers ---------------------------------------------------------------------------------


def _deadline(raw: str, config: Settings, now: Any) -> Any:
    try:
        return parse_when(raw, now=now, zone=config.letters.zone)
    except BadTime as exc:
        fail(str(exc))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")


def _read_text(path: Path) -> str:
    data = _read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        fail(f"{path} is not UTF-8 text")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    if not rows:
        typer.echo("(none)")
        return
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def main() -> None:
    app()
