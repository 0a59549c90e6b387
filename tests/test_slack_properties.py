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
from bot.templating import escape_mrkdwn

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


def repeat_to(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


# Letters whose text alone is at or just under the combined limit: where forgetting the header,
# the long title, the counter or the buttons would push a post over it.
word = st.sampled_from(["signature", "<!channel>", "&", "é", "a", "Interpol"])
edge_text = st.tuples(
    st.integers(kit.MAX_BLOCK_CHARS - 400, kit.MAX_BLOCK_CHARS), st.lists(word, min_size=1)
).map(lambda t: repeat_to(" ".join(t[1]) + "\n\n", t[0]))
titles = st.one_of(hostile, st.text(min_size=151, max_size=4000), edge_text)
counts = st.one_of(st.integers(0, 12), st.integers(0, kit.COUNT_RESERVE))


def view(
    title: str,
    body: str,
    state: str = "open",
    count: int = 3,
    closed_at: datetime | None = None,
) -> LetterView:
    return LetterView(
        slug="x",
        title=title or "t",
        state=state,
        deadline=datetime(2030, 1, 1, tzinfo=UTC),
        deadline_text="2030-01-01 00:00 UTC",
        closed_at=closed_at,
        count=count,
        text=f"{title}\n\n{body}",
        body=body or "b",
    )


def block_text_chars(node: Any) -> int:
    """Every text object's characters (plain_text and mrkdwn), counted independently of kit."""
    if isinstance(node, list):
        return sum(block_text_chars(v) for v in node)
    if not isinstance(node, dict):
        return 0
    own = len(node["text"]) if isinstance(node.get("text"), str) else 0
    return own + sum(block_text_chars(v) for v in node.values() if isinstance(v, dict | list))


def post(letter: LetterView) -> list[dict[str, Any]]:
    """The blocks the Slack adapter sends for this letter (posting and every later edit)."""
    return kit.letter_blocks(letter, with_file=not kit.letter_fits(letter))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=titles,
    body=st.one_of(hostile, long_text, edge_text),
    state=st.sampled_from(["open", "closed"]),
    count=counts,
)
def test_letter_posts_fit_and_ping_nobody(title: str, body: str, state: str, count: int) -> None:
    letter = view(title, body, state, count, datetime(2029, 12, 31, 23, 59, tzinfo=UTC))
    blocks = post(letter)
    assert validate_blocks(blocks) == []
    assert block_text_chars(blocks) <= kit.MAX_BLOCK_CHARS
    for text in [*mrkdwn_fields(blocks), kit.letter_fallback(letter)]:
        assert not any(ping in text for ping in PINGS)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=titles, body=st.one_of(hostile, edge_text), count=counts)
def test_a_post_keeps_its_layout_and_limits_as_the_count_grows_and_it_closes(
    title: str, body: str, count: int
) -> None:
    """Posted inline at one signature, a letter stays inline and valid at any count and closed."""
    posted = view(title, body, "open", 1)
    inline = kit.letter_fits(posted)
    for later in (
        view(title, body, "open", count),
        view(title, body, "closed", count, datetime(2029, 12, 31, tzinfo=UTC)),
    ):
        assert kit.letter_fits(later) == inline
        blocks = kit.letter_blocks(later, with_file=not inline)
        assert validate_blocks(blocks) == [] and block_text_chars(blocks) <= kit.MAX_BLOCK_CHARS


def inline_at_the_limit(title: str, count: int) -> LetterView:
    """A letter whose inline post at `count` has exactly MAX_BLOCK_CHARS characters of text."""
    size = kit.MAX_BLOCK_CHARS
    for _ in range(20):
        letter = view(title, repeat_to("We the undersigned write to you. ", size), "open", count)
        total = block_text_chars(kit.letter_blocks(letter, with_file=False))
        if total == kit.MAX_BLOCK_CHARS:
            return letter
        size += kit.MAX_BLOCK_CHARS - total
    raise AssertionError("could not build a letter at the limit")


def test_letters_at_the_limit_go_out_as_a_file() -> None:
    """Text alone at the limit, or a post exactly at it now that will grow: both as a file."""
    title = "Open letter on the candidacy to the Executive Committee " * 3  # a long title too
    body = repeat_to("We the undersigned parliamentarians write to you. ", 11_000)
    text_at_limit = view(title, body[: kit.MAX_BLOCK_CHARS - len(title) - 2])
    assert len(escape_mrkdwn(text_at_limit.text)) == kit.MAX_BLOCK_CHARS
    # Exactly at the limit with one signature: "10 signatures" or closing would push it over.
    at_one = inline_at_the_limit(title, 1)
    grown = view(title, at_one.body, "open", 10)
    assert block_text_chars(kit.letter_blocks(grown, with_file=False)) > kit.MAX_BLOCK_CHARS
    for letter in (text_at_limit, at_one, grown):
        assert not kit.letter_fits(letter)
        blocks = post(letter)
        assert kit.FILE_NOTE in str(blocks)
        assert validate_blocks(blocks) == [] and block_text_chars(blocks) <= kit.MAX_BLOCK_CHARS
    short = view(title, body[:2000])
    assert kit.letter_fits(short) and kit.FILE_NOTE not in str(post(short))


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
