"""Chat commands through the platform-neutral dispatcher: DESIGN.md §6 rules 1–4 and 11."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from types import NoneType

import pytest
from conftest import make_settings
from helpers import create_example_letter, import_example_roster

from bot.config import Settings
from bot.core import Dispatcher, Invocation, Reply
from bot.db import Database
from bot.models._types import utcnow
from bot.platforms.base import render_reply
from bot.store import audit, members, signatures
from bot.templating import Safe, escape_for
from handlers import REGISTRY


def say(
    dispatcher: Dispatcher,
    user: str,
    command: str,
    *args: str,
    channel: str = "#members",
    platform: str = "console",
    thread: str | None = None,
    now=None,
) -> str:  # type: ignore[no-untyped-def]
    inv = Invocation(
        platform=platform,
        channel=channel,
        user=user,
        command=command,
        args=list(args),
        thread=thread,
        display_name=f"{user} (display)",
    )
    (reply,) = dispatcher.dispatch(inv, now=now)
    return render_reply(reply, "text")


@pytest.fixture
def dispatcher(settings: Settings, database: Database) -> Dispatcher:
    import_example_roster(database)
    return Dispatcher(settings, database, REGISTRY)


def test_sign_confirms_with_title_and_second_time_says_already(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    letter = create_example_letter(database, settings, post_to=["console:#members"])
    first = say(dispatcher, "au-abetz", "sign")  # slug inferred: the one open letter here
    assert "signed" in first and letter.title in first
    assert "Senator Eric Abetz (Australia)" in first
    second = say(dispatcher, "au-abetz", "sign", "interpol-2021")
    assert "already signed" in second and "via console" in second
    with database.session() as session:
        assert signatures.count_active(session, letter_pk=letter.id) == 1


def test_unknown_account_gets_clear_reply_and_pending_request(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    letter = create_example_letter(database, settings, post_to=["console:#members"])
    reply = say(dispatcher, "stranger", "sign")
    assert "could not match" in reply and "nothing was signed" in reply
    with database.session() as session:
        pending = members.list_pending(session)
        assert [(p.external_id, p.letter_pk) for p in pending] == [("stranger", letter.id)]
        assert signatures.count_active(session, letter_pk=letter.id) == 0
    listing = say(dispatcher, "coordinator", "cosign", "pending")
    assert "stranger" in listing
    linked = say(dispatcher, "coordinator", "cosign", "link", "stranger", "au-antic")
    assert "Senator Alex Antic" in linked
    assert "signed" in say(dispatcher, "stranger", "sign")
    with database.session() as session:
        assert members.list_pending(session) == []


def test_nobody_signs_as_someone_else_on_chat_platforms(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    create_example_letter(database, settings, post_to=["slack:C1"])
    # On Slack a member_id typed as the user id is just an unknown account.
    reply = say(dispatcher, "au-abetz", "sign", platform="slack", channel="C1")
    assert "could not match" in reply


def test_coordinator_commands_refuse_members_and_strangers(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    create_example_letter(database, settings)
    for sub in ("post", "close", "extend", "preview", "link", "pending"):
        for user in ("au-abetz", "stranger"):
            assert "Only coordinators" in say(dispatcher, user, "cosign", sub, "interpol-2021")
    for user in ("au-abetz", "stranger"):  # `cosign help` is everyone's help for them (§5)
        text = say(dispatcher, user, "cosign", "help")
        assert "!status [SLUG]" in text and "Coordinator commands" not in text
    assert "Coordinator commands" in say(dispatcher, "coordinator", "cosign", "help")


def test_a_roster_member_with_role_coordinator_is_a_coordinator(
    database: Database,
    settings: Settings,
    tmp_path: Path,
) -> None:
    # No configured coordinator accounts: the roster's role is the only thing that can make one.
    unconfigured = make_settings(settings.database.url, tmp_path, coordinators={"console": []})
    assert unconfigured.coordinators.for_platform("console") == []
    import_example_roster(database)  # "coordinator" has role coordinator there
    dispatcher = Dispatcher(unconfigured, database, REGISTRY)
    create_example_letter(database, unconfigured)
    assert "Coordinator commands" in say(dispatcher, "coordinator", "cosign", "help")
    assert "open for signing" in say(dispatcher, "coordinator", "cosign", "post", "interpol-2021")
    assert "Only coordinators" in say(dispatcher, "au-abetz", "cosign", "close", "interpol-2021")


def test_draft_cannot_be_signed_and_post_opens_it(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    create_example_letter(database, settings)
    # a draft is for coordinators only: to a member it does not exist (no title, no deadline)
    for command in ("sign", "status", "unsign"):
        refused = say(dispatcher, "au-abetz", command, "interpol-2021")
        assert refused == "There is no letter called 'interpol-2021'. Try letters."
    assert "not open for signing yet" in say(dispatcher, "coordinator", "sign", "interpol-2021")
    posted = say(dispatcher, "coordinator", "cosign", "post", "interpol-2021")
    assert "open for signing" in posted
    assert "signed" in say(dispatcher, "au-abetz", "sign")


def test_no_signing_or_withdrawing_after_the_deadline(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    deadline = utcnow() + timedelta(hours=1)
    create_example_letter(database, settings, deadline=deadline, post_to=["console:#members"])
    assert "signed" in say(dispatcher, "au-abetz", "sign")
    late = deadline + timedelta(seconds=1)
    refused = say(dispatcher, "au-antic", "sign", now=late)
    assert "closed at" in refused and deadline.strftime("%H:%M") in refused
    assert "too late to withdraw" in say(dispatcher, "au-abetz", "unsign", now=late)


def test_unsign_withdraws_and_then_there_is_nothing_to_withdraw(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    create_example_letter(database, settings, post_to=["console:#members"])
    say(dispatcher, "au-abetz", "sign")
    assert "withdrawn" in say(dispatcher, "au-abetz", "unsign")
    assert "nothing to withdraw" in say(dispatcher, "au-abetz", "unsign")


def test_slug_inference_by_thread_and_ambiguity(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    create_example_letter(database, settings, post_to=["console:#members"])
    second = (
        create_example_letter.__globals__["LETTER"]
        .read_text()
        .replace('slug = "interpol-2021"', 'slug = "second"')
    )
    create_example_letter(database, settings, post_to=["console:#members"], text=second)
    assert "Several letters are open here" in say(dispatcher, "au-abetz", "sign")
    from bot.store import letters as letter_store

    with database.session() as session:
        letter = letter_store.get_letter(session, slug="second")
        post = letter_store.posts_of(session, letter_pk=letter.id)[0]  # type: ignore[arg-type]
        post.message_id = "console:42"
        session.add(post)
    assert "signed" in say(dispatcher, "au-abetz", "sign", thread="console:42")
    with database.session() as session:
        assert signatures.count_active(session, letter_pk=letter.id) == 1  # type: ignore[union-attr]
    assert "No letter is open in this channel" in say(
        dispatcher, "au-abetz", "sign", channel="#elsewhere"
    )
    assert "no letter called" in say(dispatcher, "au-abetz", "sign", "nope").lower()


def test_bad_arguments_get_the_usage_line(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    create_example_letter(database, settings, post_to=["console:#members"])
    assert say(dispatcher, "au-abetz", "sign", "a", "b") == "Usage: sign [SLUG] [for MEMBER_ID]"
    assert say(dispatcher, "coordinator", "cosign", "extend", "x").startswith(
        "Usage: cosign extend SLUG WHEN"
    )
    assert "cannot read" in say(
        dispatcher, "coordinator", "cosign", "extend", "interpol-2021", "tomorrowish"
    )
    assert "Unknown command" in say(dispatcher, "au-abetz", "frobnicate")


def test_status_for_members_and_coordinators(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    create_example_letter(database, settings, post_to=["console:#members"])
    say(dispatcher, "au-abetz", "sign")
    say(dispatcher, "uk-alton", "sign")
    say(dispatcher, "stranger", "sign")
    member_view = say(dispatcher, "au-abetz", "status")
    assert "2 signatures: Australia 1, United Kingdom 1" in member_view
    assert "You signed on" in member_view
    assert "left (closes" in member_view and "UTC" in member_view
    assert "Pending accounts" not in member_view
    assert "You have not signed yet" in say(dispatcher, "au-antic", "status")
    coordinator_view = say(dispatcher, "coordinator", "status")
    assert "Lord (David) Alton (United Kingdom)" in coordinator_view
    assert "Not signed yet (45)" in coordinator_view
    assert "console:stranger" in coordinator_view


def test_status_hides_names_from_members_when_not_public(
    database: Database,
    settings: Settings,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    from conftest import make_settings

    private = make_settings(settings.database.url, tmp_path, letters={"public_signatories": False})
    import_example_roster(database)
    dispatcher = Dispatcher(private, database, REGISTRY)
    create_example_letter(database, private, post_to=["console:#members"])
    say(dispatcher, "uk-alton", "sign")
    assert "Alton" not in say(dispatcher, "au-abetz", "status")
    assert "Alton" in say(dispatcher, "coordinator", "status")


def test_every_state_change_is_audited(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    create_example_letter(database, settings)
    say(dispatcher, "coordinator", "cosign", "post", "interpol-2021")
    say(dispatcher, "au-abetz", "sign")
    say(dispatcher, "au-abetz", "unsign")
    say(dispatcher, "stranger", "sign")
    say(dispatcher, "coordinator", "cosign", "link", "stranger", "au-antic")
    say(dispatcher, "coordinator", "cosign", "extend", "interpol-2021", "+5d")
    say(dispatcher, "coordinator", "cosign", "close", "interpol-2021")
    with database.session() as session:
        actions = [e.action for e in audit.list_events(session, letter_slug="interpol-2021")]
        assert audit.verify_chain(session) == []
    assert actions == [
        "letter.created",
        "letter.opened",
        "letter.post_queued",
        "signature.added",
        "signature.withdrawn",
        "pending.recorded",
        "letter.deadline_moved",
        "letter.closed",
    ]


def test_unexpected_errors_are_logged_once_and_answered_with_an_error_id(
    dispatcher: Dispatcher, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(REGISTRY.commands["letters"], "handler", broken)
    with caplog.at_level(logging.ERROR):
        reply = say(dispatcher, "au-abetz", "letters")
    assert reply.startswith("Sorry, something went wrong")
    error_id = reply.split("error id ")[1].rstrip(").")
    records = [r for r in caplog.records if error_id in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is not None
    assert "disk on fire" not in reply and "Traceback" not in reply


def test_help_lists_commands_with_platform_prefix(dispatcher: Dispatcher) -> None:
    text = say(dispatcher, "au-abetz", "help")
    assert "!sign [SLUG]" in text and "!status [SLUG]" in text and "cosign help" not in text
    assert "/sign [SLUG]" in say(dispatcher, "U1", "help", platform="slack", channel="C1")
    assert "!cosign help" in say(dispatcher, "coordinator", "help")


def _plain(value: object) -> bool:
    """Plain data all the way down: nothing already formatted for one platform (Safe)."""
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return not isinstance(value, Safe) and isinstance(value, str | int | float | bool | NoneType)


def test_reply_objects_are_platform_neutral(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    letter = create_example_letter(database, settings, post_to=["console:#members", "slack:C1"])
    with database.session() as session:
        abetz = members.get_member(session, member_id="au-abetz")
        assert abetz is not None
        members.link_identity(
            session,
            platform="slack",
            external_id="UABETZ",
            member=abetz,
            linked_via="test",
            linked_by="test",
        )

    def sign(platform: str, user: str, channel: str) -> Reply:
        (reply,) = dispatcher.dispatch(Invocation(platform, channel, user, "sign"))
        return reply

    on_slack = sign("slack", "UABETZ", "C1")
    assert "withdrawn" in say(dispatcher, "UABETZ", "unsign", platform="slack", channel="C1")
    on_console = sign("console", "au-abetz", "#members")
    # The same command gets the same answer on every platform: data, not markup.
    assert on_slack.template == on_console.template == "replies/signed.j2"
    assert on_slack.context == on_console.context
    assert on_slack.visibility == on_console.visibility == "private"
    assert _plain(on_slack.context)
    # Each adapter renders that one reply in its own markup.
    marks = {"text": "{}", "mrkdwn": "*{}*", "md": "**{}**", "html": "<b>{}</b>"}
    for fmt, mark in marks.items():
        rendered = render_reply(on_slack, fmt)
        assert mark.format(escape_for(fmt, letter.title)) in rendered, fmt
        assert "Senator Eric Abetz" in rendered
    assert "*" not in render_reply(on_slack, "text") and "<b>" not in render_reply(on_slack, "md")


def test_member_status_gives_counts_not_a_wall_of_names_above_the_limit(
    dispatcher: Dispatcher, database: Database, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bot.status

    create_example_letter(database, settings, post_to=["console:#members"])
    for member_id in ("au-abetz", "uk-alton", "au-antic"):
        say(dispatcher, member_id, "sign")
    monkeypatch.setattr(bot.status, "MEMBER_NAME_LIMIT", 2)
    member_view = say(dispatcher, "au-abetz", "status")
    assert "3 signatures: Australia 2, United Kingdom 1." in member_view
    assert "3 people signed: too many to list here" in member_view
    assert "Alton" not in member_view
    assert "Lord (David) Alton (United Kingdom)" in say(dispatcher, "coordinator", "status")


def test_letters_shows_drafts_to_coordinators_only(
    dispatcher: Dispatcher, database: Database, settings: Settings
) -> None:
    create_example_letter(database, settings, post_to=["console:#members"])
    draft = (
        create_example_letter.__globals__["LETTER"]
        .read_text()
        .replace('slug = "interpol-2021"', 'slug = "next-one"')
        .replace('title = "Candidacy of', 'title = "Draft: Candidacy of')
    )
    create_example_letter(database, settings, text=draft)  # not posted: still a draft
    member_view = say(dispatcher, "au-abetz", "letters")
    assert "interpol-2021" in member_view and ", open," in member_view
    assert "next-one" not in member_view and "Draft:" not in member_view
    assert "next-one" not in say(dispatcher, "stranger", "letters")
    coordinator_view = say(dispatcher, "coordinator", "letters")
    assert "interpol-2021" in coordinator_view
    draft_line = next(line for line in coordinator_view.splitlines() if "next-one" in line)
    assert "Draft: Candidacy" in draft_line and ", draft," in draft_line
