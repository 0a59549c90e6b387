"""Property-based tests: parsers never crash on bad input, rendering never leaks markup."""

from __future__ import annotations

import csv
import io
import json
import tomllib
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.compile import FORMATS, LetterText, render_letter
from bot.core import parse_text
from bot.letterfile import LetterFileError, parse_letter
from bot.names import Signatory, render_name
from bot.roster import COLUMNS, RosterError, parse_roster
from bot.templating import escape_mrkdwn

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HOSTILE_BITS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)" onclick="x()">x</a>',
    "[x](javascript:alert(1))",
    "<!channel>",
    "<@U123>",
    "{{ 7*7 }}",
    "{% for x in y %}",
    "*bold* _em_ `code`",
    "&lt;script&gt;",
    "\u0130\u00df\u0301",
]
hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE_BITS), st.text(max_size=20)), max_size=5
).map("".join)
short_text = st.text(max_size=30)


# --- parse_text -------------------------------------------------------------------------------


@FAST
@given(st.text(max_size=200))
@example('!sign "unclosed')
@example("/ sign")
@example("!!")
def test_parse_text_never_raises(text: str) -> None:
    result = parse_text(text)
    if result is not None:
        command, args = result
        assert command and command == command.lower()
        assert all(isinstance(arg, str) for arg in args)


@FAST
@given(st.sampled_from(["!", "/"]), st.from_regex(r"[a-z]{1,10}", fullmatch=True))
def test_parse_text_reads_commands(prefix: str, word: str) -> None:
    assert parse_text(f"{prefix}{word} interpol-2021") == (word, ["interpol-2021"])


# --- parse_letter -----------------------------------------------------------------------------


def letter_outcome(text: str) -> None:
    try:
        source = parse_letter(text, zone=ZoneInfo("Europe/Brussels"), now=NOW)
    except LetterFileError as exc:
        assert str(exc)
        return
    assert source.body.strip()
    assert unicodedata.is_normalized("NFC", source.title + source.body)
    assert source.deadline is not None and source.deadline.utcoffset() == timedelta(0)


@FAST
@given(st.text(max_size=400))
@example("+++\n+++\n")
@example("+++\nslug = [\n+++\nbody")
def test_parse_letter_on_arbitrary_text(text: str) -> None:
    letter_outcome(text)


@FAST
@given(st.text(max_size=400))
def test_parse_letter_on_arbitrary_text_after_a_front_matter_marker(text: str) -> None:
    letter_outcome("+++\n" + text)


def toml_string(text: str) -> str:
    escaped = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F or c in '\\"' else c for c in text
    )
    return f'"{escaped}"'


def toml_value(value: object) -> str:
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


# The whole calendar, ends included: out-of-range deadlines must be a LetterFileError too.
realistic_moments = st.datetimes(
    timezones=st.one_of(st.none(), st.just(UTC), st.just(timezone(timedelta(hours=-5)))),
)
scalar = st.one_of(
    short_text,
    st.integers(),
    st.booleans(),
    realistic_moments,
    st.sampled_from(
        [
            "2026-03-01T12:00",
            "+3d",
            "+30m",
            "2026-03-01T12:00Z",
            "soon",
            "",
            "+99999999999d",
            "9999-12-31T23:00-05:00",
        ]
    ),
)
front_value = st.one_of(scalar, st.lists(scalar, max_size=4))
front_keys = st.sampled_from(
    ["slug", "title", "date", "deadline", "closing", "signed_by", "addressees", "template"]
)


@FAST
@given(
    st.dictionaries(
        st.one_of(front_keys, st.from_regex(r"[a-z_]{1,8}", fullmatch=True)),
        front_value,
        max_size=9,
    ),
    st.text(max_size=80),
)
def test_parse_letter_on_front_matter_from_arbitrary_values(
    meta: dict[str, object], body: str
) -> None:
    front = "".join(f"{key} = {toml_value(value)}\n" for key, value in meta.items())
    tomllib.loads(front)  # the generator itself writes valid TOML
    letter_outcome(f"+++\n{front}+++\n{body}")


# --- parse_roster -----------------------------------------------------------------------------


def roster_outcome(data: bytes | str) -> None:
    try:
        rows = parse_roster(data)
    except RosterError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return
    ids = [row.values["member_id"] for row in rows]
    assert len(ids) == len(set(ids)) and all(ids)


@FAST
@given(st.binary(max_size=400))
@example(b"\xef\xbb\xbf")
@example(b'member_id,family_name,group\n"unterminated\n')
def test_parse_roster_on_arbitrary_bytes(data: bytes) -> None:
    roster_outcome(data)


cell = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["member", "coordinator", "U0ABC", "@a:b.org", "x", ""]),
)


@FAST
@given(
    st.permutations(COLUMNS),
    st.lists(st.lists(cell, min_size=9, max_size=12), max_size=8),
)
def test_parse_roster_on_arbitrary_csv(columns: list[str], rows: list[list[str]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows(rows)
    roster_outcome(out.getvalue())
    roster_outcome(out.getvalue().encode("utf-8"))


# --- rendering --------------------------------------------------------------------------------


@st.composite
def signatories(draw: st.DrawFn) -> list[Signatory]:
    people = []
    for i in range(draw(st.integers(min_value=0, max_value=6))):
        given, family = draw(hostile_text), draw(hostile_text)
        name = render_name(
            title=draw(st.sampled_from(["", "Senator", "Rt Hon Sir"])),
            given_name=given,
            family_name=family,
            post_nominals=draw(st.sampled_from(["", "MP", "MEP"])),
            display_name=draw(st.one_of(st.just(""), hostile_text)),
        )
        group = draw(st.one_of(hostile_text, st.sampled_from(["Österreich", "Éire", "Estonia"])))
        people.append(Signatory(f"m{i}", name, group, family, given))
    return people


@st.composite
def letters(draw: st.DrawFn) -> LetterText:
    return LetterText(
        slug="prop",
        title=draw(hostile_text),
        date=draw(short_text),
        addressees=draw(st.lists(hostile_text, max_size=3)),
        body=draw(hostile_text),
        closing=draw(short_text),
        signed_by=draw(hostile_text),
    )


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, attrs))


@FAST
@given(letters(), signatories())
def test_render_letter_never_raises_and_html_stays_inert(
    letter: LetterText, people: list[Signatory]
) -> None:
    outputs = {fmt: render_letter(letter, people, fmt) for fmt in FORMATS}
    html = outputs["html"]
    assert "<script" not in html.lower()
    parser = Tags()
    parser.feed(html)
    for tag, attrs in parser.seen:
        assert tag not in ("script", "img", "iframe", "object", "svg")
        for name, value in attrs:
            assert not name.lower().startswith("on"), (tag, name)
            assert "javascript:" not in (value or "").lower()
    document = json.loads(outputs["json"])
    assert document["signatures"] == len(people)
    assert sorted(s["name"] for g in document["groups"] for s in g["signatories"]) == sorted(
        p.name for p in people
    )


@FAST
@given(
    hostile_text,
    st.sampled_from(["{{ ", "{%- ", "{# ", "{{'", "{% raw %}"]),
    hostile_text,
    st.sampled_from([" }}", " -%}", " #}", "'}}", "{% endraw %}"]),
)
def test_body_is_never_evaluated_as_a_template(
    before: str, opening: str, inside: str, closing: str
) -> None:
    body = f"Dear all,\n\n{before}{opening}{inside}{closing}\n\nEnd."
    letter = LetterText("prop", "T", "", [], body, "", "")
    assert body in render_letter(letter, [], "txt")
    assert body in render_letter(letter, [], "md")


def unescape_mrkdwn(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@FAST
@given(hostile_text)
@example("<!channel> <!here|here> <@U1> <#C1> <http://x|y>")
def test_mrkdwn_escaping_neutralises_mentions_and_round_trips(text: str) -> None:
    escaped = escape_mrkdwn(text)
    assert "<!" not in escaped and "<@" not in escaped and "<#" not in escaped
    assert unescape_mrkdwn(escaped) == text
