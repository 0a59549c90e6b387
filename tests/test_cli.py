"""The cosign CLI: exit codes, one-line refusals, compile, status --json, audit --verify."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_settings
from helpers import EXPECTED, LETTER, ROSTER, sign_everyone
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from bot.cli import app
from bot.core import Dispatcher, Invocation
from bot.db import Database
from bot.platforms.base import render_reply
from handlers import REGISTRY


class Cli:
    def __init__(self, config: Path, db_url: str, out_dir: Path) -> None:
        self.runner = CliRunner()
        self.env = {"COSIGN_DATABASE__URL": db_url, "COSIGN_LETTERS__OUTPUT_DIR": str(out_dir)}
        self.config = config

    def __call__(self, *args: str, code: int = 0):  # type: ignore[no-untyped-def]
        result = self.runner.invoke(app, ["--config", str(self.config), *args], env=self.env)
        assert result.exit_code == code, (args, result.output, result.stderr)
        assert "Traceback" not in result.output + result.stderr
        return result


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    config = tmp_path / "bot.toml"
    config.write_text('[coordinators]\nannounce = ["console:#secretariat"]\n', encoding="utf-8")
    return Cli(config, db_url, tmp_path / "out")


def _sign_everyone(db_url: str) -> None:
    from bot.db import Database

    database = Database(db_url)
    sign_everyone(database)
    database.dispose()


def test_whole_letter_flow_and_byte_exact_compile(cli: Cli, db_url: str, tmp_path: Path) -> None:
    assert "48 new" in cli("roster", "import", str(ROSTER)).stdout
    created = cli("letter", "create", str(LETTER), "--deadline", "+3d")
    assert "created draft interpol-2021" in created.stdout
    assert "draft" in cli("letter", "list").stdout
    posted = cli("letter", "post", "interpol-2021", "--to", "console:#members", "--to", "slack:C1")
    assert "queued: console:#members" in posted.stdout and "queued: slack:C1" in posted.stdout
    assert (
        "already posted: slack:C1"
        in cli("letter", "post", "interpol-2021", "--to", "slack:C1").stdout
    )
    _sign_everyone(db_url)
    preview = cli("compile", "interpol-2021", "--format", "txt").stdout
    assert preview == EXPECTED.read_text(encoding="utf-8")
    cli("letter", "close", "interpol-2021")
    assert cli("compile", "interpol-2021").stdout == EXPECTED.read_text(encoding="utf-8")
    out = tmp_path / "letter.html"
    cli("compile", "interpol-2021", "--format", "html", "--out", str(out))
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    csv_text = cli("compile", "interpol-2021", "--format", "csv").stdout
    assert csv_text.splitlines()[0] == "group,name,member_id,signed_at,via"
    assert len(csv_text.splitlines()) == 48
    data = json.loads(cli("compile", "interpol-2021", "--format", "json").stdout)
    assert data["signatures"] == 47
    refused = cli("letter", "close", "interpol-2021", code=1)
    assert refused.stderr.strip() == "cosign: interpol-2021 is already closed"


def test_status_json_has_the_documented_fields(cli: Cli) -> None:
    cli("roster", "import", str(ROSTER))
    cli("letter", "create", str(LETTER), "--deadline", "2099-01-01T12:00:00+01:00")
    cli("letter", "post", "interpol-2021", "--to", "console:#members")
    data = json.loads(cli("status", "interpol-2021", "--json").stdout)
    assert set(data) == {
        "slug",
        "state",
        "deadline",
        "signatures",
        "groups",
        "signatories",
        "awaiting_member",
        "version",
        "awaiting_reconfirmation",
        "pending",
        "visibility",
        "leads_not_signed",
        "embargo",
        "published_at",
    }
    assert data["deadline"] == "2099-01-01T11:00:00Z"
    assert data["visibility"] == "public" and data["embargo"] is None
    assert data["leads_not_signed"] == [] and data["published_at"] is None
    assert data["state"] == "open" and data["signatures"] == 0 and data["groups"] == {}
    assert data["version"] == 1 and data["awaiting_reconfirmation"] == []
    text_status = cli("status", "interpol-2021").stdout
    assert "Not signed yet (47)" in text_status


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["letter", "show", "nope"], "cosign: no letter with slug 'nope'"),
        (["letter", "create", "LETTER"], "is in the past"),
        (["letter", "create", "LETTER", "--deadline", "whenever"], "cannot read 'whenever'"),
        (["letter", "post", "nope", "--to", "console:#a"], "no letter with slug"),
        (["letter", "post", "nope", "--to", "irc:#a"], "is not PLATFORM:CHANNEL"),
        (["status", "nope"], "no letter with slug"),
        (["compile", "nope"], "no letter with slug"),
        (["audit", "nope"], "no letter with slug"),
        (["letter", "extend", "nope", "--deadline", "+1d"], "no letter with slug"),
        (["roster", "import", "missing.csv"], "cannot read missing.csv"),
    ],
)
def test_refusals_are_one_line_with_exit_1(cli: Cli, args: list[str], message: str) -> None:
    args = [str(LETTER) if a == "LETTER" else a for a in args]
    result = cli(*args, code=1)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_duplicate_slug_and_malformed_front_matter(cli: Cli, tmp_path: Path) -> None:
    cli("letter", "create", str(LETTER), "--deadline", "+1d")
    dup = cli("letter", "create", str(LETTER), "--deadline", "+1d", code=1)
    assert "already exists" in dup.stderr
    bad = tmp_path / "bad.md"
    bad.write_text('+++\nslug = "x"\ntitle = \n+++\nbody\n', encoding="utf-8")
    result = cli("letter", "create", str(bad), code=1)
    assert "front matter is not valid TOML" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_past_deadline_refused_on_extend_and_closed_letter_final(cli: Cli) -> None:
    cli("letter", "create", str(LETTER), "--deadline", "+1d")
    assert (
        "in the past"
        in cli(
            "letter", "extend", "interpol-2021", "--deadline", "2020-01-01T00:00Z", code=1
        ).stderr
    )
    assert "draft" in cli("letter", "close", "interpol-2021", code=1).stderr
    cli("letter", "post", "interpol-2021", "--to", "console:#m")
    cli("letter", "extend", "interpol-2021", "--deadline", "+2d")
    cli("letter", "close", "interpol-2021")
    assert (
        "compiled text is final"
        in cli("letter", "extend", "interpol-2021", "--deadline", "+5d", code=1).stderr
    )
    assert "closed" in cli("letter", "update", str(LETTER), code=1).stderr


def test_roster_import_errors_list_every_line(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "roster.csv"
    bad.write_text(
        "member_id,family_name,group,matrix_id,role\n"
        "a,A,X,,member\n"
        ",B,X,,member\n"
        "a,C,X,@bad,member\n"
        "d,D,X,,chair\n",
        encoding="utf-8",
    )
    result = cli("roster", "import", str(bad), code=1)
    for expected in (
        "line 3: member_id is missing",
        "line 4: duplicate member_id",
        "line 4: matrix_id",
        "line 5: unknown role",
    ):
        assert expected in result.stderr
    assert cli("roster", "list").stdout.strip() == "(none)"  # all or nothing


def test_roster_export_then_import_is_a_no_op(cli: Cli, tmp_path: Path) -> None:
    cli("roster", "import", str(ROSTER))
    exported = cli("roster", "export").stdout
    again = tmp_path / "again.csv"
    again.write_text(exported, encoding="utf-8")
    assert "0 new, 0 updated, 48 unchanged" in cli("roster", "import", str(again)).stdout
    assert cli("roster", "export").stdout == exported
    assert "au-abetz" in cli("roster", "list").stdout


def test_audit_verify_detects_a_tampered_row(cli: Cli, db_url: str) -> None:
    cli("roster", "import", str(ROSTER))
    cli("letter", "create", str(LETTER), "--deadline", "+1d")
    cli("letter", "post", "interpol-2021", "--to", "console:#m")
    listing = cli("audit", "interpol-2021", "--verify").stdout
    assert "letter.created" in listing and "audit chain verified: intact" in listing
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                'UPDATE auditevent SET detail = \'{"target": "slack:EVIL"}\' '
                "WHERE action = 'letter.post_queued'"
            )
        )
    engine.dispose()
    broken = cli("audit", "interpol-2021", "--verify", code=1)
    assert "hash does not match" in broken.stderr


def test_bad_config_names_the_key(tmp_path: Path, db_url: str) -> None:
    config = tmp_path / "bot.toml"
    config.write_text("[scheduler]\ntick_seconds = -1\n", encoding="utf-8")
    result = Cli(config, db_url, tmp_path)("letter", "list", code=1)
    assert "scheduler.tick_seconds" in result.stderr


def test_usage_errors_exit_2(cli: Cli) -> None:
    cli("letter", "frobnicate", code=2)
    cli("compile", "interpol-2021", "--format", "rtf", code=2)
    cli("letter", "post", "interpol-2021", code=2)  # --to is required


def test_real_process_exit_codes_and_python_m(tmp_path: Path) -> None:
    """`python -m bot` from any directory works on the database the environment names."""
    elsewhere = tmp_path / "elsewhere"  # not the checkout, and not where the database is
    elsewhere.mkdir()
    database = tmp_path / "fresh.db"
    env = {"COSIGN_DATABASE__URL": f"sqlite:///{database}", "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(
        [sys.executable, "-m", "bot", "db", "upgrade"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    with sqlite3.connect(database) as conn:  # migrated where the environment said
        assert conn.execute("SELECT count(*) FROM letter").fetchone() == (0,)
    refused = subprocess.run(
        [sys.executable, "-m", "bot", "status", "nope"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert refused.stderr == "cosign: no letter with slug 'nope'\n"
    assert list(elsewhere.iterdir()) == []  # no stray default cosign.db where it ran


def test_coordinator_status_names_signatures_given_to_an_earlier_text(
    cli: Cli, db_url: str, tmp_path: Path
) -> None:
    """A material change (DESIGN.md §9): earlier signatures stop counting until re-confirmed;
    coordinators see who must re-confirm, members only their own signature's state."""
    cli("roster", "import", str(ROSTER))
    cli("letter", "create", str(LETTER), "--deadline", "+3d")
    cli("letter", "post", "interpol-2021", "--to", "console:#members")
    database = Database(db_url)
    dispatcher = Dispatcher(make_settings(db_url, tmp_path), database, REGISTRY)

    def say(user: str, command: str) -> str:
        (reply,) = dispatcher.dispatch(Invocation("console", "#members", user, command))
        return render_reply(reply, "text")

    for member_id in ("au-abetz", "uk-alton", "au-antic"):
        assert "You signed" in say(member_id, "sign")
    assert "re-confirm" not in say("coordinator", "status")
    revised = tmp_path / "revised.md"
    revised.write_text(
        LETTER.read_text(encoding="utf-8").replace("Dear Ministers,", "Dear Honourable Ministers,"),
        encoding="utf-8",
    )
    updated = cli("letter", "update", str(revised)).stdout.strip()
    assert updated.startswith("updated interpol-2021: version 2 (")
    assert "3 signatures no longer count until re-confirmed" in updated
    assert "You signed" in say("be-cogolati", "sign")  # the new text
    assert "withdrawn" in say("uk-alton", "unsign")  # withdrawn: neither counted nor asked
    coordinator_view = say("coordinator", "status")
    assert "\n1 signature: Belgium 1." in coordinator_view
    assert "Must re-confirm" in coordinator_view and "(2): " in coordinator_view
    assert "Alton" not in coordinator_view.split("Must re-confirm")[1].split("\n")[0]
    assert "Must re-confirm" in cli("status", "interpol-2021").stdout
    member_view = say("au-abetz", "status")
    assert "Must re-confirm" not in member_view and "re-confirm it with" in member_view
    database.dispose()
