"""The `cosign` command line (Typer). Exit codes: 0 ok, 1 refused or bad input, 2 usage."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bot.campaign import (
    CampaignError,
    require_letter,
)
from bot.cli_letters import letter_app
from bot.cli_support import (
    CLI_ACTOR,
    fail,
    opened,
    read_bytes,
    settings,
    state,
    table,
    warn,
)
from bot.compile import (
    DOCUMENT_FORMATS,
    FORMATS,
    render_document,
    render_letter,
    sha256_hex,
    signatory_lines,
)
from bot.config import DEFAULT_CONFIG_PATH, Settings
from bot.letterfile import LetterFileError
from bot.models import Letter
from bot.models._types import utcnow
from bot.receipts import AnchorError, parse_anchor
from bot.roster import RosterError, export_roster, import_roster
from bot.status import status_view
from bot.store import audit as audit_store
from bot.store import letters as letter_store
from bot.store import members as member_store
from bot.timeutil import format_utc, iso_utc

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="cosign: co-signatures of open letters on Slack, Matrix and the console.",
)
db_app = typer.Typer(no_args_is_help=True, help="The database.")
roster_app = typer.Typer(no_args_is_help=True, help="The roster of members.")
app.add_typer(db_app, name="db")
app.add_typer(roster_app, name="roster")
app.add_typer(letter_app, name="letter")

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
    data = read_bytes(file)
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
    table(("member_id", "role", "group", "name", ""), rows)


@roster_app.command("export")
def roster_export() -> None:
    """Print the roster as CSV in the import format (export then import changes nothing)."""
    with opened() as (_, database), database.session() as session:
        sys.stdout.write(export_roster(session))


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
        warn(warnings)
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
    data = read_bytes(file)
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


def main() -> None:
    app()
