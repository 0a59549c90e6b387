"""Shared by the published-record tests: the CLI on a test database, the golden signatory lines,
PDF text read back with pypdf."""

from __future__ import annotations

import io
from pathlib import Path

from helpers import EXPECTED, LETTER, ROSTER, sign_everyone
from pypdf import PdfReader
from typer.testing import CliRunner

from bot.cli import app
from bot.db import Database

SLUG = "interpol-2021"


class Cli:
    """`cosign …` in-process, with bot.toml text of the test's choosing and the test database."""

    def __init__(self, tmp_path: Path, db_url: str, config: str = "") -> None:
        self.runner = CliRunner()
        self.db_url = db_url
        self.out_dir = tmp_path / "out"
        self.config = tmp_path / "bot.toml"
        self.config.write_text(config, encoding="utf-8")
        self.env = {"COSIGN_DATABASE__URL": db_url, "COSIGN_LETTERS__OUTPUT_DIR": str(self.out_dir)}

    def __call__(self, *args: str, code: int = 0):  # type: ignore[no-untyped-def]
        result = self.runner.invoke(app, ["--config", str(self.config), *args], env=self.env)
        assert result.exit_code == code, (args, result.output, result.stderr)
        assert "Traceback" not in result.output + result.stderr
        return result

    def seed(self, roster: Path = ROSTER, letter: Path = LETTER) -> None:
        """The roster imported, the letter posted and signed by every member."""
        self("roster", "import", str(roster))
        self("letter", "create", str(letter), "--deadline", "+3d")
        self("letter", "post", SLUG, "--to", "console:#members")
        database = Database(self.db_url)
        try:
            sign_everyone(database)
        finally:
            database.dispose()


def golden_lines() -> list[str]:
    """The signatory lines of examples/interpol-2021.expected.txt, in order (after signed_by)."""
    lines = EXPECTED.read_text(encoding="utf-8").splitlines()
    start = lines.index("MEMBERS OF THE INTER-PARLIAMENTARY ALLIANCE ON CHINA") + 1
    return [line for line in lines[start:] if line.strip()]


def pdf_pages(data: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


def pdf_lines(data: bytes) -> list[str]:
    return [line.strip() for page in pdf_pages(data) for line in page.splitlines()]
