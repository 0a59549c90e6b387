"""Slack's command set: no Slack built-in in the manifest; `/cosign` routes the everyday commands.

Slack reserves its built-in slash commands (`/status` is one) and rejects a manifest that declares
one, so status and help are `/cosign status` and `/cosign help` on Slack (DESIGN.md §5).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from conftest import make_settings
from helpers import create_example_letter, import_example_roster

from bot.config import Settings
from bot.core import Dispatcher, Invocation
from bot.db import Database
from bot.platforms.base import render_reply
from bot.platforms.slack.manifest import SLACK_BUILTIN_COMMANDS, manifest, to_yaml
from bot.store import members
from handlers import REGISTRY


def _ask(dispatcher: Dispatcher, user: str, *words: str, platform: str = "slack") -> str:
    invocation = Invocation(platform, "C1", user, words[0], list(words[1:]))
    (reply,) = dispatcher.dispatch(invocation)
    return render_reply(reply, "text")


def _link(database: Database, member_id: str, slack_id: str) -> None:
    with database.session() as session:
        member = members.get_member(session, member_id=member_id)
        assert member is not None
        members.link_identity(
            session,
            platform="slack",
            external_id=slack_id,
            member=member,
            linked_via="roster",
            linked_by="test",
        )


def test_manifest_declares_no_slack_builtin_command(tmp_path: Path) -> None:
    for mode, url in (("socket", None), ("http", "https://cosign.example.org/slack/events")):
        settings = make_settings("sqlite:///x.db", tmp_path, slack={"mode": mode}).slack
        data = yaml.safe_load(to_yaml(manifest(settings, url)))
        commands = {c["command"] for c in data["features"]["slash_commands"]}
        assert commands == {"/sign", "/unsign", "/letters", "/cosign"}
        assert not commands & SLACK_BUILTIN_COMMANDS
        # Slack's rule for a command name: a slash, then at most 32 lowercase characters, no space
        assert all(re.fullmatch(r"/[a-z0-9_-]{1,32}", c) for c in commands)
    assert "/status" in SLACK_BUILTIN_COMMANDS  # the one that broke the manifest


def test_help_on_slack_names_only_commands_that_exist(
    settings: Settings, database: Database, tmp_path: Path
) -> None:
    import_example_roster(database)
    _link(database, "au-abetz", "UABETZ")
    dispatcher = Dispatcher(settings, database, REGISTRY)
    declared = {
        c["command"]
        for c in manifest(make_settings("sqlite:///x.db", tmp_path).slack)["features"][
            "slash_commands"
        ]
    }
    for user in ("UABETZ", "USTRANGER"):
        text = _ask(dispatcher, user, "help")
        typed = re.findall(r"(/[a-z]+)(?: ([a-z]+))?", text)
        assert typed, text
        assert {command for command, _ in typed} <= declared, text
        assert "/cosign status [SLUG]" in text
        assert "/status" not in text.replace("/cosign status", "")


def test_cosign_routes_everyday_commands_for_everyone(
    settings: Settings, database: Database
) -> None:
    import_example_roster(database)
    _link(database, "au-abetz", "UABETZ")
    letter = create_example_letter(database, settings, post_to=["slack:C1"])
    dispatcher = Dispatcher(settings, database, REGISTRY)

    before = _ask(dispatcher, "UABETZ", "cosign", "status", letter.slug)
    assert letter.title in before and "You have not signed" in before
    signed = _ask(dispatcher, "UABETZ", "cosign", "sign", letter.slug)
    assert "You signed" in signed and letter.title in signed
    after = _ask(dispatcher, "UABETZ", "cosign", "status")  # the one letter open in C1
    assert "You signed on" in after and "You have not signed" not in after
    assert letter.slug in _ask(dispatcher, "UABETZ", "cosign", "letters")
    member_help = _ask(dispatcher, "UABETZ", "cosign", "help")
    assert "/sign [SLUG]" in member_help and "/cosign post" not in member_help

    refused = _ask(dispatcher, "UABETZ", "cosign", "post", letter.slug)
    assert refused.startswith("Only coordinators")
    assert "Only coordinators" in _ask(dispatcher, "UABETZ", "cosign")


def test_coordinators_keep_their_subcommands_and_help(
    settings: Settings, database: Database, db_url: str, tmp_path: Path
) -> None:
    import_example_roster(database)
    letter = create_example_letter(database, settings, post_to=["slack:C1"])
    with_admin = make_settings(db_url, tmp_path, coordinators={"slack": ["UADMIN"]})
    dispatcher = Dispatcher(with_admin, database, REGISTRY)
    text = _ask(dispatcher, "UADMIN", "cosign", "help")
    assert "Coordinator commands" in text and "/cosign post SLUG" in text
    status = _ask(dispatcher, "UADMIN", "cosign", "status", letter.slug)
    assert "Not signed yet" in status  # the coordinator's view, through /cosign status
