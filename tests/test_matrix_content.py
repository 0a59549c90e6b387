"""The Matrix adapter's pure translation functions (no homeserver needed)."""

from __future__ import annotations

from bot.core import Reply, parse_text
from bot.platforms.matrix.content import (
    MAX_CONTENT_BYTES,
    Rendered,
    command_text,
    content_bytes,
    edit,
    fits,
    html_lines,
    is_edit,
    notice,
    preview,
    reply_pair,
    strip_reply_fallback,
    thread_and_reply,
    txn_id,
)


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
