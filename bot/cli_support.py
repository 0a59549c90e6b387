"""What the command line's modules share: the configuration chosen, the opened database, and
one-line failures (exit 1)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from bot.campaign import CampaignError
from bot.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings
from bot.db import Database
from bot.letterfile import LetterFileError
from bot.roster import RosterError
from bot.timeutil import BadTime, parse_when

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


WhenOption = Annotated[
    str | None,
    typer.Option(
        "--deadline",
        help="ISO 8601 (read in [letters].timezone without an offset) or relative: +30m, +2h, +3d.",
    ),
]


def deadline_from(raw: str, config: Settings, now: Any) -> Any:
    try:
        return parse_when(raw, now=now, zone=config.letters.zone)
    except BadTime as exc:
        fail(str(exc))


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")


def read_text(path: Path) -> str:
    data = read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        fail(f"{path} is not UTF-8 text")


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    if not rows:
        typer.echo("(none)")
        return
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def warn(warnings: Sequence[dict[str, Any]]) -> None:
    for warning in warnings:
        typer.echo(f"cosign: warning: {warning.get('message', warning)}", err=True)
