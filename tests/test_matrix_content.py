"""The Matrix adapter's pure translation functions (no homeserver needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nio import AsyncClient, AsyncClientConfig, MatrixRoom

from bot.core import Reply, parse_text
from bot.platforms.matrix.content import (
    MAX_CONTENT_BYTES,
    MAX_EVENT_BYTES,
    Rendered,
    command_text,
    content_bytes,
    edit,
    fits,
    html_lines,
    is_edit,
    notice,
    pill_user,
    preview,
    reply_pair,
    sent_bytes,
    strip_reply_fallback,
    thread_and_reply,
    txn_id,
)

ROOM = "!members:example.org"
DEVICE = "COSIGNDEV"
#: letters in scripts that JSON escapes: Cyrillic and Greek (6 bytes a character once escaped),
#: CJK with astral characters (12), and plain ASCII for comparison
SCRIPTS = {
    "cyrillic": "Уважаемые министры, мы пишем вам. " * 170,
    "greek": "Αξιότιμοι υπουργοί, σας γράφουμε. " * 170,
    "cjk": "尊敬的部长们，我们写信给你们。𠀋𠀍 " * 300,
    "ascii": "Dear Ministers, we write to you. " * 170,
}


def test_reply_fallback_and_pills_are_stripped_before_parsing() -> None:
    body = "> <@bot:x> 📜 Letter\n> !unsign everything\n\n!sign interpol-2021"
    assert strip_reply_fallback(body) == "!sign interpol-2021"
    assert strip_reply_fallback("!sign") == "!sign"
    html = (
        "<mx-reply><blockquote>!unsign</blockquote></mx-reply>!cosign link "
        '<a href="https://matrix.to/#/%40alice%3Aexample.org">Alice &lt;3</a> au-abetz'
    )
    content = {
        "body": "!cosign link Alice <3 au-abetz",
        "format": "org.matrix.custom.html",
        "formatted_body": html,
    }
    assert parse_text(command_text(content)) == (
        "cosign",
        ["link", "@alice:example.org", "au-abetz"],
    )
    assert command_text({"body": "/sign"}) == "/sign"
    assert command_text({}) == ""


def test_relations_edits_and_threads() -> None:
    assert thread_and_reply({"body": "x"}) == (None, None)
    reply = {"m.relates_to": {"m.in_reply_to": {"event_id": "$post"}}}
    assert thread_and_reply(reply) == (None, "$post")
    threaded = {
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": "$root",
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": "$last"},
        }
    }
    assert thread_and_reply(threaded) == ("$root", None)
    assert is_edit({"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}})
    assert is_edit({"m.new_content": {"body": "!sign"}})
    assert not is_edit(reply)


def test_notice_and_edit_content() -> None:
    message = Rendered("first line\nsecond", "first line<br>second")
    content = notice(message, reply_to="$cmd", thread_root="$root")
    assert content["msgtype"] == "m.notice" and content["m.mentions"] == {}
    assert content["format"] == "org.matrix.custom.html"
    assert content["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": False,
        "m.in_reply_to": {"event_id": "$cmd"},
    }
    assert notice(message)["m.mentions"] == {} and "m.relates_to" not in notice(message)
    changed = edit("$post", notice(message))
    assert changed["m.relates_to"] == {"rel_type": "m.replace", "event_id": "$post"}
    assert changed["m.new_content"]["body"] == "first line\nsecond"
    assert changed["m.new_content"]["formatted_body"] == "first line<br>second"
    assert changed["body"] == "* first line" and changed["formatted_body"] == "* first line"
    assert changed["m.mentions"] == {} and changed["m.new_content"]["m.mentions"] == {}


def test_html_is_escaped_and_sanitised() -> None:
    reply = Reply("replies/error.j2", {"message": '<script>x</script> @room <b onclick="y">'})
    rendered = reply_pair(reply)
    assert rendered.text == '<script>x</script> @room <b onclick="y">'
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    assert html_lines('<b>ok</b>\n<img src=x onerror=y><a href="z">l</a>') == "<b>ok</b><br>l"


def test_sizes_and_transaction_ids() -> None:
    small = notice(Rendered("x", "x"))
    assert fits(small, encrypted=True)
    big = notice(Rendered("é" * 40_000, "é" * 40_000))
    assert content_bytes(big) > MAX_CONTENT_BYTES and not fits(big, encrypted=False)
    assert txn_id("post:a:matrix:!r") == txn_id("post:a:matrix:!r")
    assert txn_id("a", "b") != txn_id("a", "c") and txn_id("x").startswith("cosign.")
    text = "\n".join(f"line {i}" for i in range(1000))
    cut = preview(text, 100)
    assert len(cut) <= 100 and text.startswith(cut) and cut.endswith(tuple("0123456789"))


def test_pills_with_other_permalinks_are_read_from_m_mentions() -> None:
    """Clients with their own permalink prefix, or matrix: URIs, still give a user id."""
    for href in ("https://example.org/#/@alice:server", "matrix:u/alice:server?action=chat"):
        content = {
            "body": "!cosign link Alice au-abetz",
            "format": "org.matrix.custom.html",
            "formatted_body": f'!cosign link <a href="{href}">Alice</a> au-abetz',
            "m.mentions": {"user_ids": ["@alice:server"]},
        }
        assert parse_text(command_text(content)) == (
            "cosign",
            ["link", "@alice:server", "au-abetz"],
        )
    # An ordinary link naming nobody in m.mentions stays text.
    assert pill_user("https://example.org/#/@bob:server", frozenset({"@alice:server"})) is None
    assert pill_user("https://example.org/about", frozenset({"@alice:server"})) is None
    assert pill_user("https://matrix.to/#/%40bob%3Ax") == "@bob:x"  # no m.mentions: as before


def test_replies_are_notices_and_posts_can_be_text() -> None:
    message = Rendered("📜 a letter", "📜 a letter")
    assert notice(message)["msgtype"] == "m.notice"
    post = notice(message, msgtype="m.text")
    assert post["msgtype"] == "m.text" and post["m.mentions"] == {}
    changed = edit("$post", post)
    assert changed["msgtype"] == "m.text" and changed["m.new_content"]["msgtype"] == "m.text"


@pytest.fixture
async def encrypting_client(tmp_path: Path) -> AsyncIterator[AsyncClient]:
    """A real nio client with an Olm account and a shared megolm session for ROOM (no network
    needed: ``AsyncClient.encrypt`` is local)."""
    client = AsyncClient(
        "http://127.0.0.1:9",
        "@cosign:example.org",
        device_id=DEVICE,
        store_path=str(tmp_path),
        config=AsyncClientConfig(encryption_enabled=True, pickle_key="test"),
    )
    client.restore_login("@cosign:example.org", DEVICE, "token")
    room = MatrixRoom(ROOM, "@cosign:example.org", encrypted=True)
    room.members_synced = True
    client.rooms[ROOM] = room
    assert client.olm is not None
    client.olm.create_outbound_group_session(ROOM)
    client.olm.outbound_group_sessions[ROOM].shared = True
    yield client
    await client.close()


def _nio_encrypted_bytes(client: AsyncClient, content: dict[str, Any]) -> int:
    event_type, envelope = client.encrypt(ROOM, "m.room.message", dict(content))
    assert event_type == "m.room.encrypted"
    return content_bytes(envelope)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
async def test_encrypted_size_is_what_nio_sends(
    encrypting_client: AsyncClient, script: str
) -> None:
    """The measure matches the m.room.encrypted content nio really builds (never below it)."""
    text = SCRIPTS[script]
    for content in (
        notice(Rendered(text, text), reply_to="$command"),
        edit("$post", notice(Rendered(text, text), msgtype="m.text")),
    ):
        real = _nio_encrypted_bytes(encrypting_client, content)
        estimated = sent_bytes(content, encrypted=True, room_id=ROOM, device_id=DEVICE)
        assert real <= estimated <= real + 16, (real, estimated)
        # Unknown room and device count at their longest: never an underestimate.
        assert sent_bytes(content, encrypted=True) >= estimated


async def test_non_latin_letter_is_measured_as_sent(encrypting_client: AsyncClient) -> None:
    """A 6,000-character Cyrillic letter is ~24 KB of UTF-8 but ~96 KB once nio has escaped,
    encrypted and base64-encoded it: over Synapse's limit, so it must not count as fitting."""
    text = "Ж" * 6000
    content = notice(Rendered(text, text))
    assert content_bytes(content) < 42_000  # what the old measure saw: it "fitted"
    assert _nio_encrypted_bytes(encrypting_client, content) > MAX_EVENT_BYTES
    assert not fits(content, encrypted=True, room_id=ROOM, device_id=DEVICE)
    assert fits(content, encrypted=False)  # unencrypted, the UTF-8 JSON is what counts
    # ASCII of the same length fits either way; a Greek text near the limit is measured right.
    ascii_content = notice(Rendered("x" * 6000, "x" * 6000))
    assert fits(ascii_content, encrypted=True, room_id=ROOM, device_id=DEVICE)
    near = notice(Rendered("α" * 3500, "α" * 3500))  # 56.5 KB as sent: fits
    assert fits(near, encrypted=True, room_id=ROOM, device_id=DEVICE)
    over = notice(Rendered("α" * 3800, "α" * 3800))  # 61.3 KB: past the margin
    assert MAX_CONTENT_BYTES < _nio_encrypted_bytes(encrypting_client, over) < MAX_EVENT_BYTES
    assert not fits(over, encrypted=True, room_id=ROOM, device_id=DEVICE)
