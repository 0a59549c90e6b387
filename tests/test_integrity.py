"""Hostile input that must not get through, whatever the platform (the security review's items)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import LETTER, create_example_letter, import_example_roster

from bot.config import Settings
from bot.core import Dispatcher, Invocation
from bot.db import Database
from bot.letterfile import LetterFileError, parse_letter
from bot.models._types import utcnow
from bot.platforms.base import render_reply
from bot.store import audit, members
from handlers import REGISTRY


def _say(dispatcher: Dispatcher, user: str, command: str, *args: str, name: str = "") -> str:
    invocation = Invocation("matrix", "!room:x", user, command, list(args), display_name=name)
    (reply,) = dispatcher.dispatch(invocation)
    return render_reply(reply, "text")


def test_a_slug_with_a_trailing_newline_is_refused() -> None:
    text = LETTER.read_text(encoding="utf-8").replace(
        'slug = "interpol-2021"', 'slug = "interpol-2021\\n"'
    )
    with pytest.raises(LetterFileError, match="slug"):
        parse_letter(text, zone=ZoneInfo("UTC"), now=utcnow())


HOSTILE = "Eve\x1b]0;pwned\x07\x1b[2J\u202egnp.exe\u2028next line\u200bX"


def test_names_from_a_chat_platform_are_stored_without_control_characters(
    settings: Settings, database: Database
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["matrix:!room:x"])
    dispatcher = Dispatcher(settings, database, REGISTRY)
    _say(dispatcher, "@eve:evil.example", "sign", name=HOSTILE)
    with database.session() as session:
        (pending,) = members.list_pending(session)
        events = audit.list_events(session, letter_slug="interpol-2021")
    recorded = [e.detail.get("display_name") for e in events if e.action == "pending.recorded"]
    for stored in (pending.display_name, *recorded):
        assert stored == "Eve]0;pwned[2Jgnp.exe next lineX", repr(stored)
    # and what coordinators see in chat carries none of them either
    with_admin = settings.model_copy(deep=True)
    with_admin.coordinators.matrix = ["@admin:x"]
    listed = _say(Dispatcher(with_admin, database, REGISTRY), "@admin:x", "cosign", "pending")
    assert "Eve]0;pwned" in listed
    assert not any(ch in listed for ch in "\x1b\x07\u202e\u2028\u200b")


def test_persian_and_indic_joiners_survive() -> None:
    from bot.names import clean_platform_text

    name = "\u0645\u062d\u0645\u062f\u200c\u0631\u0636\u0627 \u0915\u094d\u200d\u0937"
    assert clean_platform_text(name) == name


def test_a_draft_does_not_exist_for_members(settings: Settings, database: Database) -> None:
    import_example_roster(database)
    letter = create_example_letter(database, settings)  # a draft
    dispatcher = Dispatcher(settings, database, REGISTRY)
    for command in ("status", "sign", "unsign"):
        for user in ("au-abetz", "stranger"):
            invocation = Invocation("console", "#members", user, command, [letter.slug])
            (reply,) = dispatcher.dispatch(invocation)
            text = render_reply(reply, "text")
            assert letter.title not in text and "not open" not in text
            assert text.startswith("There is no letter called")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_the_sqlite_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "cosign.db"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    database.dispose()
    for file in path.parent.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name
