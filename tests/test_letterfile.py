"""The letter file: TOML front matter between +++ lines, then the Markdown body (DESIGN.md §5)."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.compile import LetterText, render_letter
from bot.letterfile import LetterFileError, LetterSource, parse_letter

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "interpol-2021.md"
NOW = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)

FRONT = """slug = "test-letter"
title = "A test letter"
date = "1 March 2026"
deadline = "2026-03-01T12:00:00+00:00"
closing = "Sincerely,"
signed_by = "THE UNDERSIGNED"
addressees = ["The Minister", "The Deputy Minister"]
"""
BODY = "Dear Ministers,\n\nPlease act."


def letter_file(front: str = FRONT, body: str = BODY) -> str:
    return f"+++\n{front}+++\n{body}\n"


def parse(text: str, zone: ZoneInfo | None = None) -> LetterSource:
    return parse_letter(text, zone=zone or ZoneInfo("UTC"), now=NOW)


def refused(text: str) -> str:
    with pytest.raises(LetterFileError) as caught:
        parse(text)
    return str(caught.value)


def without(key: str) -> str:
    return "".join(line + "\n" for line in FRONT.splitlines() if not line.startswith(key + " "))


def test_example_letter() -> None:
    source = parse(EXAMPLE.read_text(encoding="utf-8"))
    assert source.slug == "interpol-2021"
    assert source.title == (
        "Candidacy of Hu Binchen (P.R. China) to INTERPOL's Executive Committee"
    )
    assert source.date == "15 November 2021"
    assert source.deadline == datetime(2021, 11, 15, 12, 0, tzinfo=UTC)
    assert source.closing == "Sincerely,"
    assert source.signed_by == "MEMBERS OF THE INTER-PARLIAMENTARY ALLIANCE ON CHINA"
    assert len(source.addressees) == 18
    assert source.addressees[0] == "Hon Karen Andrews MP, Minister for Home Affairs (Australia)"
    assert source.addressees[11] == "Agnė Bilotaitė, Minister of the Interior (Lithuania)"
    assert source.body.startswith("Dear Ministers,\n\nWe write to you")
    assert source.body.endswith("look forward to hearing from you.")
    assert source.template == ""


def test_optional_keys_default_to_empty() -> None:
    front = "".join(
        line + "\n"
        for line in FRONT.splitlines()
        if line.split(" ")[0] not in ("date", "closing", "signed_by")
    )
    source = parse(letter_file(front))
    assert (source.date, source.closing, source.signed_by) == ("", "", "")


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Dear Ministers,\n\nNo front matter here.\n", "+++"),
        ("+++\n" + FRONT + "Dear Ministers,\n", "not closed"),
        (letter_file('slug = "x"\ntitle = \n'), "not valid TOML"),
        (letter_file(FRONT + 'colour = "red"\n'), "unknown keys: colour"),
        (letter_file(FRONT.replace('"A test letter"', "42")), "title must be a string"),
        (letter_file(FRONT.replace('"A test letter"', '"   "')), "title is empty"),
        (letter_file(FRONT.replace('"1 March 2026"', "2026-03-01")), "date must be a string"),
        (letter_file(FRONT.replace('"test-letter"', '"Test Letter"')), "slug 'Test Letter'"),
        (letter_file(FRONT.replace('"test-letter"', '"-x"')), "slug '-x'"),
        (letter_file(FRONT.replace('"test-letter"', '"a' + "b" * 100 + '"')), "slug"),
        (letter_file(FRONT.replace('"2026-03-01T12:00:00+00:00"', '"next Tuesday"')), "deadline"),
        (letter_file(FRONT.replace('"2026-03-01T12:00:00+00:00"', "2026-03-01")), "deadline"),
        (
            letter_file(FRONT.replace('["The Minister", "The Deputy Minister"]', '"Minister"')),
            "addressees must be a list",
        ),
        (letter_file(FRONT.replace('"The Deputy Minister"', "3")), "addressees must be a list"),
        (letter_file(FRONT, body=""), "no body"),
        (letter_file(FRONT, body="\n  \n\t\n"), "no body"),
        (letter_file(FRONT + 'template = "fancy"\n'), "unknown template 'fancy'"),
    ],
)
def test_malformed_files_are_refused_with_a_clear_message(text: str, fragment: str) -> None:
    assert fragment in refused(text)


@pytest.mark.parametrize("key", ["slug", "title", "deadline", "addressees"])
def test_missing_required_key(key: str) -> None:
    message = refused(letter_file(without(key)))
    assert "missing" in message and key in message


def test_bad_deadline_message_says_what_is_expected() -> None:
    message = refused(letter_file(FRONT.replace("2026-03-01T12:00:00+00:00", "soonish")))
    assert "soonish" in message and "ISO 8601" in message


# --- deadline ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deadline", "expected"),
    [
        ('"2026-07-01T12:00:00"', datetime(2026, 7, 1, 10, 0, tzinfo=UTC)),  # CEST, UTC+2
        ('"2026-01-15T12:00"', datetime(2026, 1, 15, 11, 0, tzinfo=UTC)),  # CET, UTC+1
        ("2026-07-01T12:00:00", datetime(2026, 7, 1, 10, 0, tzinfo=UTC)),  # TOML local datetime
        ('"2026-07-01T12:00:00+00:00"', datetime(2026, 7, 1, 12, 0, tzinfo=UTC)),
        ('"2026-07-01T12:00:00Z"', datetime(2026, 7, 1, 12, 0, tzinfo=UTC)),
        ("2026-07-01T12:00:00-04:00", datetime(2026, 7, 1, 16, 0, tzinfo=UTC)),
    ],
)
def test_deadline_without_offset_is_read_in_the_configured_zone(
    deadline: str, expected: datetime
) -> None:
    front = FRONT.replace('"2026-03-01T12:00:00+00:00"', deadline)
    source = parse(letter_file(front), zone=ZoneInfo("Europe/Brussels"))
    assert source.deadline == expected
    assert source.deadline is not None and source.deadline.utcoffset() == UTC.utcoffset(None)


def test_relative_deadline_counts_from_now() -> None:
    front = FRONT.replace('"2026-03-01T12:00:00+00:00"', '"+3d"')
    assert parse(letter_file(front)).deadline == datetime(2026, 1, 4, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("deadline", ['"+99999999999d"', '"9999-12-31T23:59:00-05:00"'])
def test_out_of_range_deadline_is_a_letter_file_error(deadline: str) -> None:
    front = FRONT.replace('"2026-03-01T12:00:00+00:00"', deadline)
    assert "deadline" in refused(letter_file(front))


# --- encoding and normalisation ---------------------------------------------------------------


def test_crlf_and_bom_are_accepted() -> None:
    plain = letter_file()
    windows = "\ufeff" + plain.replace("\n", "\r\n")
    assert parse(windows) == parse(plain)
    assert "\r" not in parse(windows).body


def test_example_with_crlf_has_the_same_version() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert parse("\ufeff" + text.replace("\n", "\r\n")).version == parse(text).version


def test_text_is_nfc_normalised() -> None:
    nfd_title = unicodedata.normalize("NFD", "Lettre à l'Österreich")
    nfd_body = unicodedata.normalize("NFD", "Dovilė Šakalienė asks: Ça va?")
    nfd_addressee = unicodedata.normalize("NFD", "Agnė Bilotaitė")
    front = FRONT.replace("A test letter", nfd_title).replace("The Deputy Minister", nfd_addressee)
    source = parse(letter_file(front, nfd_body))
    assert source.title == "Lettre à l'Österreich"
    assert source.body == "Dovilė Šakalienė asks: Ça va?"
    assert source.addressees[1] == "Agnė Bilotaitė"


def test_body_is_kept_as_written() -> None:
    body = "Dear all,\n\n    indented code\n\n* a list\n* with {{ jinja }} {% raw %}\n\nEnd."
    assert parse(letter_file(FRONT, body)).body == body


def test_extra_plus_lines_in_the_body_stay_in_the_body() -> None:
    body = "Dear all,\n\n+++\n\nEnd."
    assert parse(letter_file(FRONT, body)).body == body


def test_whitespace_lines_around_the_body_do_not_make_double_blank_lines() -> None:
    source = parse(letter_file(FRONT, "  \n\nDear all,\n\nPlease act.\n\t\n   "))
    letter = LetterText(
        source.slug,
        source.title,
        source.date,
        source.addressees,
        source.body,
        source.closing,
        source.signed_by,
    )
    txt = render_letter(letter, [], "txt")
    assert "1 March 2026\n\nDear all,\n\nPlease act.\n\nSincerely," in txt


# --- version ----------------------------------------------------------------------------------


def test_version_is_a_sha256_hex() -> None:
    version = parse(letter_file()).version
    assert len(version) == 64 and int(version, 16) >= 0


def test_version_changes_with_the_text() -> None:
    base = parse(letter_file()).version
    assert parse(letter_file(FRONT, BODY + " Now.")).version != base
    assert parse(letter_file(FRONT, BODY.replace("act", "Act"))).version != base
    assert parse(letter_file(FRONT.replace("A test letter", "Another letter"))).version != base
    assert parse(letter_file(FRONT.replace("Sincerely,", "Yours,"))).version != base
    assert parse(letter_file(FRONT.replace("The Deputy Minister", "The Premier"))).version != base


def test_version_does_not_change_otherwise() -> None:
    base = parse(letter_file()).version
    assert parse(letter_file()).version == base
    assert parse(letter_file(FRONT.replace("2026-03-01T12", "2026-04-01T12"))).version == base
    assert parse(letter_file(FRONT.replace('"test-letter"', '"renamed"'))).version == base
    assert parse(letter_file(FRONT, "\n\n" + BODY + "\n\n\n")).version == base
    nfd_body = unicodedata.normalize("NFD", "Ça va, Österreich?")
    nfc_body = unicodedata.normalize("NFC", "Ça va, Österreich?")
    assert (
        parse(letter_file(FRONT, nfd_body)).version == parse(letter_file(FRONT, nfc_body)).version
    )
