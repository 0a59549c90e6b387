"""Property tests of the Slack layouts: within Block Kit limits, and no pings, for any text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fakeslack import validate_blocks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core import Reply
from bot.platforms.base import render_reply
from bot.platforms.slack import blocks as kit
from bot.publishing import LetterView

PINGS = ("<!channel", "<!here", "<!everyone", "<@", "<!subteam", "<#")
hostile = st.lists(
    st.sampled_from(list("<>&!@#*_~`|\n aé") + ["<!channel>", "<@U1>", "<!here>", "<#C1>"]),
    max_size=120,
).map("".join)
long_text = st.text(max_size=40_000)


def mrkdwn_fields(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn":
            found.append(str(node.get("text", "")))
        for value in node.values():
            found.extend(mrkdwn_fields(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(mrkdwn_fields(value))
    return found


def view(title: str, body: str, state: str = "open", count: int = 3) -> LetterView:
    return LetterView(
        slug="x",
        title=title or "t",
        state=state,
        deadline=datetime(2030, 1, 1, tzinfo=UTC),
        deadline_text="2030-01-01 00:00 UTC",
        closed_at=None,
        count=count,
        text=f"{title}\n\n{body}",
        body=body or "b",
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=hostile, body=st.one_of(hostile, long_text), state=st.sampled_from(["open", "closed"]))
def test_letter_posts_fit_and_ping_nobody(title: str, body: str, state: str) -> None:
    letter = view(title, body, state)
    blocks = kit.letter_blocks(letter, with_file=not kit.letter_fits(letter))
    assert validate_blocks(blocks) == []
    assert sum(len(t) for t in mrkdwn_fields(blocks)) <= kit.MAX_BLOCK_CHARS + 200
    for text in [*mrkdwn_fields(blocks), kit.letter_fallback(letter)]:
        assert not any(ping in text for ping in PINGS)


@settings(max_examples=60, deadline=None)
@given(name=hostile, group=hostile, title=hostile)
def test_replies_escape_every_name(name: str, group: str, title: str) -> None:
    reply = Reply(
        "replies/signed.j2",
        {"title": title, "name": name, "group": group, "deadline": "soon", "slug": "x"},
    )
    text = render_reply(reply, "mrkdwn")
    blocks = kit.text_blocks(text)
    assert blocks is not None and validate_blocks(blocks) == []
    assert not any(ping in text for ping in PINGS)
    confirm = kit.confirm_blocks("x", f"{name} ({group})", title)
    assert validate_blocks(confirm) == []


@settings(max_examples=40, deadline=None)
@given(text=long_text)
def test_chunking_never_loses_a_character(text: str) -> None:
    pieces = kit.chunk(text)
    assert all(len(p) <= kit.MAX_SECTION for p in pieces)
    squeezed = "".join(text.split())
    assert "".join("".join(pieces).split()) == squeezed
