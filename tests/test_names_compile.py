"""The signatory block and the compiled letter (DESIGN.md §4): names, order, layout, escaping."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import random
import unicodedata
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from bot.compile import FORMATS, LetterText, render_letter
from bot.letterfile import parse_letter
from bot.names import Signatory, render_name
from bot.roster import parse_roster

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DATA = Path(__file__).resolve().parent / "data"
HEADER = "member_id,title,given_name,family_name,post_nominals,group,display_name,email,slack_id,"
HEADER += "matrix_id,role\n"

NAME_PARTS = ("title", "given_name", "family_name", "post_nominals", "display_name")
HOSTILE = "<!channel> <@U1> <script>alert(1)</script>@room"
MARKUP = "*bold* _x_ [link](http://evil)"


def roster_signatories(data: bytes | str) -> list[Signatory]:
    """Every `member` row of a roster as a signatory, the way the store builds them."""
    out = []
    for row in parse_roster(data):
        v = row.values
        if v["role"] != "member":
            continue
        name = render_name(**{key: v[key] for key in NAME_PARTS})
        out.append(Signatory(v["member_id"], name, v["group"], v["family_name"], v["given_name"]))
    return out


def person(
    member_id: str, given: str, family: str, group: str = "Testland", **parts: str
) -> Signatory:
    """A signatory; `parts` are the other render_name fields (title, display_name, ...)."""
    parts.setdefault("title", "")
    parts.setdefault("post_nominals", "")
    name = render_name(given_name=given, family_name=family, **parts)
    return Signatory(member_id, name, group, family, given)


BASE = LetterText(
    "test", "A test letter", "1 March 2026", ["The Minister"], "Dear all,\n\nPlease act.",
    "Sincerely,", "THE UNDERSIGNED",
)  # fmt: skip


def simple_letter(**fields: object) -> LetterText:
    return dataclasses.replace(BASE, **fields)  # type: ignore[arg-type]


def letter_from_file(path: Path) -> LetterText:
    source = parse_letter(
        path.read_text(encoding="utf-8"), zone=UTC, now=datetime(2020, 1, 1, tzinfo=UTC)
    )
    return LetterText(*(getattr(source, f.name) for f in dataclasses.fields(LetterText)))


def example_letter() -> LetterText:
    return letter_from_file(EXAMPLES / "interpol-2021.md")


def signatory_lines(txt: str, letter: LetterText) -> list[str]:
    """The signatory block of a compiled txt letter, blank lines kept."""
    return txt.split(letter.signed_by + "\n\n", 1)[1].rstrip("\n").split("\n")


def family_order(signatories: list[Signatory]) -> list[str]:
    rendered = json.loads(render_letter(simple_letter(), signatories, "json"))
    return [s["member_id"] for g in rendered["groups"] for s in g["signatories"]]


# --- the reference letter -------------------------------------------------------------------


def test_example_letter_with_everyone_signed_matches_expected_bytes() -> None:
    signatories = roster_signatories((EXAMPLES / "ipac-roster.csv").read_bytes())
    assert len(signatories) == 47
    out = render_letter(example_letter(), signatories, "txt")
    assert out.encode("utf-8") == (EXAMPLES / "interpol-2021.expected.txt").read_bytes()


@pytest.mark.parametrize("seed", [1, 7, 42, 2021, 99991])
@pytest.mark.parametrize("fmt", FORMATS)
def test_output_does_not_depend_on_input_order(seed: int, fmt: str) -> None:
    signatories = roster_signatories((EXAMPLES / "ipac-roster.csv").read_bytes())
    reference = render_letter(example_letter(), signatories, fmt)
    shuffled = list(signatories)
    random.Random(seed).shuffle(shuffled)
    assert shuffled != signatories
    assert render_letter(example_letter(), shuffled, fmt) == reference


# --- order (Unicode Collation Algorithm) ------------------------------------------------------


@pytest.mark.parametrize(
    ("families", "expected"),
    [
        (["Buz", "Bütikofer", "Busch"], ["Busch", "Bütikofer", "Buz"]),
        (["Mayer", "Lyons", "Łukasz", "Lange"], ["Lange", "Łukasz", "Lyons", "Mayer"]),
        (["Pérez", "Olsen", "Ødegaard", "Nolan"], ["Nolan", "Ødegaard", "Olsen", "Pérez"]),
        (["Strassmann", "Straßer", "Strassburg"], ["Strassburg", "Straßer", "Strassmann"]),
        (
            ["Walder", "van der Lee", "Tusk", "Sjoerdsma"],
            ["Sjoerdsma", "Tusk", "van der Lee", "Walder"],
        ),
        (["Davis", "carter", "Baker", "adams"], ["adams", "Baker", "carter", "Davis"]),
    ],
)
def test_family_names_file_under_their_base_letter(
    families: list[str], expected: list[str]
) -> None:
    signatories = [person(f"m{i}", "Given", family) for i, family in enumerate(families)]
    by_id = {s.member_id: s.family_name for s in signatories}
    assert [by_id[m] for m in family_order(signatories)] == expected


def test_groups_sorted_by_collation_key_eire_before_estonia() -> None:
    groups = ["France", "Estonia", "Éire", "denmark", "Österreich", "Zambia"]
    signatories = [person(f"m{i}", "A", "B", group) for i, group in enumerate(groups)]
    rendered = json.loads(render_letter(simple_letter(), signatories, "json"))
    expected = "denmark Éire Estonia France Österreich Zambia".split()
    assert [g["group"] for g in rendered["groups"]] == expected


def test_case_does_not_change_order() -> None:
    lower = [person("a", "x", "mcdowell"), person("b", "x", "Norris"), person("c", "x", "Lann")]
    upper = [person("a", "x", "McDowell"), person("b", "x", "norris"), person("c", "x", "LANN")]
    assert family_order(lower) == family_order(upper) == ["c", "a", "b"]


def test_within_group_family_then_given_then_member_id() -> None:
    signatories = [
        person("z-berg-2", "Anna", "Berg"),
        person("berg-carl", "Carl", "Berg"),
        person("z-berg-1", "Anna", "Berg"),
        person("abel", "Zoe", "Abel"),
        person("berg-bert", "Bert", "Berg"),
    ]
    assert family_order(signatories) == ["abel", "z-berg-1", "z-berg-2", "berg-bert", "berg-carl"]


def test_display_name_changes_printing_not_sorting() -> None:
    signatories = [
        person("young", "Yan", "Young"),
        person("zimmer", "Zora", "Zimmer", display_name="Aaron A. Aardvark"),
        person("adams", "Ann", "Adams"),
    ]
    txt = render_letter(simple_letter(), signatories, "txt")
    assert signatory_lines(txt, simple_letter()) == [
        "Ann Adams (Testland)",
        "Yan Young (Testland)",
        "Aaron A. Aardvark (Testland)",
    ]
    assert "Zimmer" not in txt


def test_groups_separated_by_one_blank_line_and_unsigned_groups_absent() -> None:
    roster = HEADER + (
        "jp-yamao,,Shiori,Yamao,,Japan,,,,,member\n"
        "be-cogolati,,Samuel,Cogolati,MP,Belgium,,,,,member\n"
        "au-abetz,Senator,Eric,Abetz,,Australia,,,,,member\n"
        "au-andrews,,Kevin,Andrews,MP,Australia,,,,,member\n"
    )
    signed = [s for s in roster_signatories(roster) if s.group != "Japan"]
    letter = simple_letter()
    txt = render_letter(letter, signed, "txt")
    assert "Japan" not in txt and "Yamao" not in txt
    assert signatory_lines(txt, letter) == [
        "Senator Eric Abetz (Australia)",
        "Kevin Andrews MP (Australia)",
        "",
        "Samuel Cogolati MP (Belgium)",
    ]
    assert txt.endswith("Samuel Cogolati MP (Belgium)\n")


def test_decomposed_and_composed_group_from_roster_is_one_group_printed_nfc() -> None:
    nfd = unicodedata.normalize("NFD", "Österreich")
    assert nfd != "Österreich"
    roster = HEADER + (
        f"at-a,,Anna,Zeller,,{nfd},,,,,member\nat-b,,Bernd,Auer,,Österreich,,,,,member\n"
    )
    letter = simple_letter()
    txt = render_letter(letter, roster_signatories(roster.encode("utf-8")), "txt")
    assert signatory_lines(txt, letter) == ["Bernd Auer (Österreich)", "Anna Zeller (Österreich)"]
    assert unicodedata.is_normalized("NFC", txt)


@pytest.mark.parametrize("fmt", ["txt", "md", "html"])
def test_decomposed_group_on_a_signatory_prints_nfc(fmt: str) -> None:
    nfd = unicodedata.normalize("NFD", "Österreich")
    signatories = [
        person("at-a", "Anna", "Zeller", nfd),
        person("at-b", "Bernd", "Auer", "Österreich"),
    ]
    out = render_letter(simple_letter(), signatories, fmt)
    assert out.count("Österreich") == 2
    assert unicodedata.is_normalized("NFC", out)


@pytest.mark.parametrize("fmt", FORMATS)
def test_lithuanian_name_prints_exactly_as_written(fmt: str) -> None:
    roster = HEADER + "lt-sakaliene,,Dovilė,Šakalienė,MP,Lithuania,,,,,member\n"
    out = render_letter(simple_letter(), roster_signatories(roster.encode("utf-8")), fmt)
    if fmt == "json":
        groups = json.loads(out)["groups"]
        assert groups[0]["signatories"][0]["name"] == "Dovilė Šakalienė MP"
    else:
        assert "Dovilė Šakalienė MP" in out
    assert unicodedata.is_normalized("NFC", out)


# --- rendered names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("Senator", "Eric", "Abetz", ""), "Senator Eric Abetz"),
        (("", "Kevin", "Andrews", "MP"), "Kevin Andrews MP"),
        (("Rt Hon Sir", "Iain", "Duncan-Smith", "MP"), "Rt Hon Sir Iain Duncan-Smith MP"),
        (("Lord", "(David)", "Alton", ""), "Lord (David) Alton"),
        (("", "", "Yamao", ""), "Yamao"),
        ((" Ms. ", "  ", " Dumas", "   "), "Ms. Dumas"),
    ],
)
def test_render_name(parts: tuple[str, str, str, str], expected: str) -> None:
    title, given, family, post = parts
    name = render_name(title=title, given_name=given, family_name=family, post_nominals=post)
    assert name == expected
    assert "  " not in name


def test_display_name_overrides_rendered_name() -> None:
    signatory = person("au-abetz", "Eric", "Abetz", title="Senator", display_name=" E. Abetz ")
    assert signatory.name == "E. Abetz"


# --- escaping ---------------------------------------------------------------------------------


Tag = tuple[str, list[tuple[str, str | None]]]


def collect_tags(html: str) -> list[Tag]:
    tags: list[Tag] = []
    parser = HTMLParser()
    parser.handle_starttag = lambda tag, attrs: tags.append((tag, attrs))  # type: ignore[method-assign]
    parser.feed(html)
    return tags


def hostile_signatories() -> list[Signatory]:
    return [person("x-hostile", "", HOSTILE, "Testland"), person("x-markup", "", MARKUP)]


def test_html_escapes_names() -> None:
    html = render_letter(simple_letter(), hostile_signatories(), "html")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;!channel&gt; &lt;@U1&gt;" in html
    assert [t for t, _ in collect_tags(html) if t in ("script", "a", "em", "strong")] == []


def test_md_escapes_names_so_markdown_renders_no_markup() -> None:
    md = render_letter(simple_letter(), hostile_signatories(), "md")
    html = MarkdownIt("commonmark").render(md)
    tags = [t for t, _ in collect_tags(html)]
    assert "script" not in tags and "a" not in tags and "em" not in tags
    assert tags.count("strong") == 1  # the subject line, nothing from a name
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@room" in html
    assert "*bold* _x_ [link](http://evil) (Testland)" in html


def test_txt_shows_names_literally() -> None:
    txt = render_letter(simple_letter(), hostile_signatories(), "txt")
    assert f"{HOSTILE} (Testland)\n" in txt
    assert f"{MARKUP} (Testland)\n" in txt


@pytest.mark.parametrize("dangerous", ['=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)"])
def test_csv_neutralises_formula_injection(dangerous: str) -> None:
    signatories = [person("x", "", dangerous, group=dangerous)]
    rows = list(csv.reader(io.StringIO(render_letter(simple_letter(), signatories, "csv"))))
    assert rows[0][:3] == ["group", "name", "member_id"]
    group_cell, name_cell = rows[1][0], rows[1][1]
    for cell in (group_cell, name_cell):
        assert not cell.startswith(("=", "+", "-", "@"))
        assert dangerous in cell


def test_csv_keeps_ordinary_names_unchanged() -> None:
    out = render_letter(simple_letter(), hostile_signatories(), "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert sorted(r[1] for r in rows[1:]) == sorted([HOSTILE, MARKUP])


def test_json_round_trips_exact_names() -> None:
    document = json.loads(render_letter(simple_letter(), hostile_signatories(), "json"))
    names = [s["name"] for g in document["groups"] for s in g["signatories"]]
    assert sorted(names) == sorted([HOSTILE, MARKUP])
    assert document["signatures"] == 2


# --- html page and letter body ----------------------------------------------------------------


def hostile_body_letter() -> LetterText:
    return letter_from_file(DATA / "letters" / "hostile-body.md")


def test_html_is_a_standalone_page_with_rendered_markdown() -> None:
    html = render_letter(hostile_body_letter(), [person("a", "Ann", "Adams")], "html")
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "<title>A letter whose body tries things</title>" in html
    assert "<strong>important</strong>" in html
    assert '<a href="https://example.org/"' in html
    assert "Ann Adams (Testland)" in html


def test_html_sanitises_the_letter_body() -> None:
    html = render_letter(hostile_body_letter(), [], "html")
    tags = collect_tags(html)
    assert "<script" not in html.lower()
    assert [t for t, _ in tags if t in ("script", "img", "iframe")] == []
    for _, attrs in tags:
        for name, value in attrs:
            assert not name.startswith("on")
            assert "javascript:" not in (value or "").lower()


@pytest.mark.parametrize("fmt", ["txt", "md", "html"])
def test_body_is_data_not_a_template(fmt: str) -> None:
    out = render_letter(hostile_body_letter(), [], fmt)
    assert "{{ 7*7 }}" in out
    assert "{% for x in range(3) %}{{ x }}{% endfor %}" in out
    assert "49" not in out and "012" not in out


def test_txt_and_md_carry_the_body_as_written() -> None:
    letter = hostile_body_letter()
    for fmt in ("txt", "md"):
        assert letter.body in render_letter(letter, [], fmt)


# --- layout -----------------------------------------------------------------------------------


def assert_single_blank_lines(text: str) -> None:
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert not text.startswith("\n")
    lines = text.split("\n")[:-1]
    for before, after in zip(lines, lines[1:], strict=False):
        assert before.strip() or after.strip(), f"double blank line in {text!r}"


@pytest.mark.parametrize("fmt", ["txt", "md"])
def test_full_letter_layout(fmt: str) -> None:
    letter = simple_letter(addressees=["The Minister", "The Deputy"])
    signatories = [person("a", "Ann", "Adams", "A-land"), person("b", "Bo", "Berg", "B-land")]
    out = render_letter(letter, signatories, fmt)
    assert_single_blank_lines(out)
    if fmt == "txt":
        assert out == (
            "The Minister\nThe Deputy\n\nSubject: A test letter\n\n1 March 2026\n\n"
            "Dear all,\n\nPlease act.\n\nSincerely,\n\nTHE UNDERSIGNED\n\n"
            "Ann Adams (A-land)\n\nBo Berg (B-land)\n"
        )
    else:
        assert out.startswith("The Minister\\\nThe Deputy\n\n**Subject: A test letter**\n\n")


@pytest.mark.parametrize("fmt", ["txt", "md"])
@pytest.mark.parametrize("signed", [True, False])
def test_layout_with_empty_optional_blocks(fmt: str, signed: bool) -> None:
    letter = simple_letter(date="", closing="", signed_by="", addressees=[])
    signatories = [person("a", "Ann", "Adams")] if signed else []
    out = render_letter(letter, signatories, fmt)
    assert_single_blank_lines(out)
    subject = "Subject: A test letter" if fmt == "txt" else "**Subject: A test letter**"
    expected = f"{subject}\n\nDear all,\n\nPlease act.\n"
    if signed:
        expected += "\nAnn Adams (Testland)\n"
    assert out == expected


def test_example_letter_layout_in_md() -> None:
    signatories = roster_signatories((EXAMPLES / "ipac-roster.csv").read_bytes())
    md = render_letter(example_letter(), signatories, "md")
    assert_single_blank_lines(md)
    assert "\n\nDovilė Šakalienė MP (Lithuania)\n\n" in md
