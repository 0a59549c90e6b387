"""The letter as PDF and DOCX (DESIGN.md §10): read back in the golden order, page size and
numbers, groups kept with their first line, a letterhead, names printed literally, and the
warning for names no font of the PDF can draw."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import docx
import pytest
from helpers import EXPECTED, LETTER
from pypdf import PdfReader
from record_support import SLUG, Cli, golden_lines, pdf_lines, pdf_pages
from sqlmodel import select

from bot import publishing
from bot.compile import LetterText, render_document
from bot.db import Database
from bot.models import Compilation, CompiledFile
from bot.pdf import PdfError, PrintOptions

AT = datetime(2021, 11, 15, 12, 0, tzinfo=UTC)
ADDRESSEES = [
    line.strip().strip('",')
    for line in LETTER.read_text(encoding="utf-8")
    .split("addressees = [")[1]
    .split("]")[0]
    .splitlines()
    if line.strip()
]
DEJAVU_SANS = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # has Arabic, no Japanese


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    return Cli(tmp_path, db_url)


def letter(body: str = "Dear Ministers,", title: str = "A letter") -> LetterText:
    return LetterText(
        slug="t",
        title=title,
        date="1 March 2026",
        addressees=["The Minister"],
        body=body,
        closing="Yours,",
        signed_by="THE UNDERSIGNED",
    )


def test_the_seed_letter_pdf_reads_back_in_the_golden_order(cli: Cli, tmp_path: Path) -> None:
    cli.seed()
    preview = tmp_path / "preview.pdf"
    cli("compile", SLUG, "--format", "pdf", "--out", str(preview))
    cli("letter", "close", SLUG)
    final = tmp_path / "final.pdf"
    cli("compile", SLUG, "--format", "pdf", "--out", str(final))
    golden = golden_lines()
    assert len(golden) == 47
    for data in (preview.read_bytes(), final.read_bytes()):
        lines = pdf_lines(data)
        assert [line for line in lines if line in set(golden)] == golden
        subject = "Subject: Candidacy of Hu Binchen (P.R. China) to INTERPOL's Executive Committee"
        assert subject in " ".join(lines)  # as typed: a long subject wraps, its quote stays
        assert lines[: len(ADDRESSEES)] == ADDRESSEES
        assert lines.index("Sincerely,") < lines.index(golden[0])
    # Once closed, compile gives the stored bytes, every time.
    again = tmp_path / "again.pdf"
    cli("compile", SLUG, "--format", "pdf", "--out", str(again))
    assert again.read_bytes() == final.read_bytes()
    database = Database(cli.db_url)
    try:
        with database.session() as session:
            stored = session.exec(select(CompiledFile).where(CompiledFile.format == "pdf")).one()
            assert bytes(stored.data) == final.read_bytes()
    finally:
        database.dispose()


def test_the_seed_letter_docx_has_one_paragraph_per_line_in_the_golden_order(
    cli: Cli, tmp_path: Path
) -> None:
    cli.seed()
    cli("letter", "close", SLUG)
    out = tmp_path / "letter.docx"
    cli("compile", SLUG, "--format", "docx", "--out", str(out))
    document = docx.Document(str(out))
    paragraphs = [p.text for p in document.paragraphs]
    assert paragraphs[: len(ADDRESSEES)] == ADDRESSEES
    subject = paragraphs[len(ADDRESSEES)]
    assert (
        subject == "Subject: Candidacy of Hu Binchen (P.R. China) to INTERPOL's Executive Committee"
    )
    assert paragraphs[len(ADDRESSEES) + 1] == "15 November 2021"
    assert paragraphs[len(ADDRESSEES) + 2] == "Dear Ministers,"
    signed_by = paragraphs.index("MEMBERS OF THE INTER-PARLIAMENTARY ALLIANCE ON CHINA")
    assert paragraphs[signed_by - 1] == "Sincerely,"
    assert paragraphs[signed_by + 1 :] == golden_lines()
    # Each group's first line is kept with the next one (Word never ends a page on it).
    expected = EXPECTED.read_text(encoding="utf-8").split("CHINA\n\n", 1)[1].strip("\n")
    groups = [block.splitlines() for block in expected.split("\n\n")]
    firsts = {group[0] for group in groups if len(group) > 1}
    assert len(firsts) > 5
    for paragraph in document.paragraphs[signed_by + 1 :]:
        kept = bool(paragraph.style.paragraph_format.keep_with_next)
        assert kept == (paragraph.text in firsts), paragraph.text


def test_docx_body_keeps_emphasis_lists_and_links() -> None:
    body = (
        "Dear *Minister*, we **urge** you:\n\n- to act\n- to *reform*\n\n"
        "3. third\n4. fourth\n\n> quoted\n\nSee [the report](https://example.org/r)."
    )
    document = docx.Document(
        io.BytesIO(
            render_document(letter(body), [["A (X)"]], "docx", options=PrintOptions(), at=AT)
        )
    )
    paragraphs = document.paragraphs
    dear = next(p for p in paragraphs if p.text.startswith("Dear"))
    assert [(r.text, r.italic, r.bold) for r in dear.runs if r.text.strip()] == [
        ("Dear ", None, None),
        ("Minister", True, None),
        (", we ", None, None),
        ("urge", None, True),
        (" you:", None, None),
    ]
    items = [(p.text, p.style.name) for p in paragraphs if p.style.name.startswith("List")]
    assert items == [
        ("to act", "List Bullet"),
        ("to reform", "List Bullet"),
        ("3.\tthird", "List"),
        ("4.\tfourth", "List"),
    ]
    assert any(p.text == "quoted" and p.style.name == "Quote" for p in paragraphs)
    assert "https://example.org/r" in [r.target_ref for r in document.part.rels.values()]
    assert any("the report" in p.text for p in paragraphs)


def test_page_size_letter_and_a4_and_page_numbers(cli: Cli, tmp_path: Path) -> None:
    cli.seed()
    a4 = tmp_path / "a4.pdf"
    cli("compile", SLUG, "--format", "pdf", "--out", str(a4))
    cli.config.write_text('[output]\npage_size = "Letter"\n', encoding="utf-8")
    us = tmp_path / "letter.pdf"
    cli("compile", SLUG, "--format", "pdf", "--out", str(us))
    us_docx = tmp_path / "letter.docx"
    cli("compile", SLUG, "--format", "docx", "--out", str(us_docx))
    for path, (width, height) in ((a4, (595.28, 841.89)), (us, (612, 792))):
        pages = PdfReader(path).pages
        assert len(pages) >= 2
        for page in pages:
            assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx(
                (width, height), abs=0.01
            )
        texts = pdf_pages(path.read_bytes())
        for number, text in enumerate(texts, start=1):
            assert f"{number} / {len(texts)}" in text.splitlines()[-1]
    section = docx.Document(str(us_docx)).sections[0]
    assert (round(section.page_width.mm, 1), round(section.page_height.mm, 1)) == (215.9, 279.4)


def test_unknown_page_size_and_bad_letterheads_are_one_line_errors(
    cli: Cli, tmp_path: Path
) -> None:
    cli.seed()
    out = str(tmp_path / "x.pdf")
    (tmp_path / "notes.txt").write_text("not a letterhead", encoding="utf-8")
    (tmp_path / "broken.typ").write_text("#let x = (", encoding="utf-8")
    for config, words in (
        ('[output]\npage_size = "B5"\n', ["output.page_size", "B5"]),
        (
            f'[output]\nletterhead = "{tmp_path / "missing.typ"}"\n',
            ["output.letterhead", "not found"],
        ),
        (
            f'[output]\nletterhead = "{tmp_path / "notes.txt"}"\n',
            ["output.letterhead", "notes.txt"],
        ),
        (
            f'[output]\nletterhead = "{tmp_path / "broken.typ"}"\n',
            ["[output].letterhead", "broken"],
        ),
    ):
        cli.config.write_text(config, encoding="utf-8")
        result = cli("compile", SLUG, "--format", "pdf", "--out", out, code=1)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert all(word in result.stderr for word in words), result.stderr


def _png(width: int = 4, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + b"\x80\x20\x20" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_letterhead_is_on_the_first_page_only(tmp_path: Path) -> None:
    head = tmp_path / "head.typ"
    head.write_text("#align(center)[*Secretariat of the Alliance*]\n", encoding="utf-8")
    lines = [[f"Member {i:03} (Group)" for i in range(120)]]
    pages = pdf_pages(
        render_document(letter(), lines, "pdf", options=PrintOptions(letterhead=head), at=AT)
    )
    assert len(pages) >= 2
    assert "Secretariat of the Alliance" in pages[0]
    assert all("Secretariat of the Alliance" not in page for page in pages[1:])
    logo = tmp_path / "logo.png"
    logo.write_bytes(_png())
    data = render_document(letter(), lines, "pdf", options=PrintOptions(letterhead=logo), at=AT)
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages[0].images) == 1
    assert all(len(page.images) == 0 for page in reader.pages[1:])
    logo.write_bytes(b"not a png")
    with pytest.raises(PdfError, match="letterhead"):
        render_document(letter(), lines, "pdf", options=PrintOptions(letterhead=logo), at=AT)


HOSTILE = [
    '#panic("a name ran as code")',
    '#eval("1 + 1")',
    "]",
    "[unclosed",
    "#set page(width: 2cm)",
    "$x^2$ *bold* _em_ `raw`",
    "@label <label> // not a comment",
    "back\\slash",
    "= not a heading",
]


def test_hostile_names_and_letter_text_print_literally() -> None:
    lines = [[f"{name} (Group {i})"] for i, name in enumerate(HOSTILE)]
    hostile_letter = LetterText(
        slug="t",
        title='#panic("title") ]',
        date="#datetime.today()",
        addressees=['#panic("addressee")'],
        body='Dear #panic("body") ] [x] $y$,\n\n- #set text(size: 1pt)',
        closing="#{ 1 }",
        signed_by="]]",
    )
    data = render_document(hostile_letter, lines, "pdf", options=PrintOptions(), at=AT)
    text = "\n".join(pdf_lines(data))
    for line in (*(line for group in lines for line in group), '#panic("addressee")'):
        assert line in text
    for piece in (
        'Subject: #panic("title") ]',
        "#datetime.today()",
        'Dear #panic("body") ] [x] $y$,',
    ):
        assert piece in text
    assert "#set text(size: 1pt)" in text and "#{ 1 }" in text and "]]" in text
    assert float(PdfReader(io.BytesIO(data)).pages[0].mediabox.width) == pytest.approx(
        595.28, abs=0.01
    )


def test_a_group_never_ends_a_page_on_its_first_line() -> None:
    """Whatever fills the page before it, the pair group's first line is never alone at the
    bottom: across every filler length one of them would put it there without the rule."""
    for fillers in range(38, 62):
        lines = [
            [f"Filler {i:03} (Aaa)" for i in range(fillers)],
            ["Pair One (Pair)", "Pair Two (Pair)"],
        ]
        pages = pdf_pages(render_document(letter(), lines, "pdf", options=PrintOptions(), at=AT))
        for page, following in zip(pages, pages[1:], strict=False):
            if "Pair Two (Pair)" in following:
                assert "Pair One (Pair)" not in page, f"split with {fillers} fillers"


WORLD_ROSTER = """\
member_id,title,given_name,family_name,post_nominals,group,display_name,email,slack_id,matrix_id,role
au-abetz,Senator,Eric,Abetz,,Australia,,,,,member
jp-yamada,,太郎,山田,,Japan,,,,,member
eg-hassan,,محمد,حسن,,Egypt,,,,,member
lt-sakaliene,,Dovilė,Šakalienė,,Lithuania,,,,,member
coordinator,,,,,,Coordinator,,,,coordinator
"""


def test_names_no_font_can_draw_are_warned_about(cli: Cli, tmp_path: Path) -> None:
    roster = tmp_path / "world.csv"
    roster.write_text(WORLD_ROSTER, encoding="utf-8")
    cli.seed(roster=roster)
    result = cli("compile", SLUG, "--format", "pdf", "--out", str(tmp_path / "p.pdf"))
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2, result.stderr
    assert any("jp-yamada" in line and "山田" in line for line in warnings)
    assert any("eg-hassan" in line and "محمد" in line for line in warnings)
    assert "[output].fonts" in warnings[0]
    # Formats that are not the PDF do not warn.
    assert (
        "warning"
        not in cli("compile", SLUG, "--format", "docx", "--out", str(tmp_path / "d.docx")).stderr
    )
    closed = cli("letter", "close", SLUG)
    assert sum("warning" in line for line in closed.stderr.splitlines()) == 2
    assert "jp-yamada" in closed.stderr and "eg-hassan" in closed.stderr
    final = cli("compile", SLUG, "--format", "pdf", "--out", str(tmp_path / "f.pdf"))
    assert "jp-yamada" in final.stderr and "eg-hassan" in final.stderr
    database = Database(cli.db_url)
    try:
        with database.session() as session:
            compilation = session.exec(select(Compilation)).one()
            fonts = [w for w in compilation.warnings or [] if w["kind"] == "font"]
            assert sorted(w["member_id"] for w in fonts) == ["eg-hassan", "jp-yamada"]
        # ... and the coordinators' closing message names them (DESIGN.md §10)
        compiled = publishing.compiled(database, slug=SLUG)
        assert compiled is not None
        witness = compiled.witness()
        assert "cannot draw" in witness and "jp-yamada (" in witness and "山" in witness
        assert "eg-hassan (" in witness and witness.startswith("PDF SHA-256 ")
    finally:
        database.dispose()


@pytest.mark.skipif(not DEJAVU_SANS.is_file(), reason="needs DejaVu Sans (fonts-dejavu-core)")
def test_output_fonts_add_a_font_that_draws_more_names(tmp_path: Path) -> None:
    from bot.fonts import font_set, unprintable
    from bot.names import Signatory, group_signatories

    people = [
        Signatory("jp-yamada", "山田 太郎", "Japan", "山田", "太郎"),
        Signatory("eg-hassan", "محمد حسن", "Egypt", "حسن", "محمد"),
        Signatory("lt-sakaliene", "Dovilė Šakalienė", "Lithuania", "Šakalienė", "Dovilė"),
    ]
    groups = group_signatories(people)
    assert {u.member_id for u in unprintable(groups, font_set())} == {"jp-yamada", "eg-hassan"}
    assert {u.member_id for u in unprintable(groups, font_set([DEJAVU_SANS]))} == {"jp-yamada"}
    data = render_document(
        letter(), [["محمد حسن (Egypt)"]], "pdf", options=PrintOptions(fonts=(DEJAVU_SANS,)), at=AT
    )
    assert b"DejaVuSans" in data  # the added font is the one that drew the Arabic name


def test_a_broken_letterhead_does_not_stop_the_close(cli: Cli, tmp_path: Path) -> None:
    """The deadline must close the letter: the PDF is made without the letterhead, and the
    coordinator is told."""
    cli.seed()
    broken = tmp_path / "broken.typ"
    broken.write_text("#let x = (", encoding="utf-8")
    cli.config.write_text(f'[output]\nletterhead = "{broken}"\n', encoding="utf-8")
    closed = cli("letter", "close", SLUG)
    assert (
        "warning" in closed.stderr
        and "letterhead" in closed.stderr
        and "without it" in closed.stderr
    )
    out = tmp_path / "final.pdf"
    cli("compile", SLUG, "--format", "pdf", "--out", str(out))
    lines = pdf_lines(out.read_bytes())
    assert [line for line in lines if line in set(golden_lines())] == golden_lines()
