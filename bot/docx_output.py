"""The compiled letter as a Word document (python-docx), for a secretariat's own letterhead.

Built paragraph by paragraph from the same pieces as the txt output, in the same order: the
addressees, the subject, the date, the body (Markdown, through bot.richtext: emphasis, lists,
quotes, links), the closing, signed_by and one paragraph per signatory line. Text is set as
run text, so nothing in a name is interpreted.
"""

from __future__ import annotations

import copy
import io
import re
import zipfile
from collections.abc import Sequence
from datetime import datetime

import docx
from docx.document import Document
from docx.enum.style import WD_STYLE_TYPE
from docx.enum.text import WD_BREAK
from docx.opc.constants import RELATIONSHIP_TYPE
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Mm, Pt
from docx.text.paragraph import Paragraph

from bot.compile import LetterText
from bot.richtext import Block, Run, parse_body

#: Paper sizes as `[output].page_size` names them (width, height).
PAGES = {"A4": (Mm(210), Mm(297)), "Letter": (Mm(215.9), Mm(279.4))}
MONOSPACE = "Courier New"
_BLANK_LINE = Pt(11)  # the space a blank line would take: between blocks, before each group
SIGNATORY_STYLE = "Signatory"
FIRST_LINE_STYLE = "Signatory, first of a group"
_TEXT = qn("w:r") + "/" + qn("w:t")
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def render_docx(
    letter: LetterText, groups: Sequence[Sequence[str]], *, page_size: str, at: datetime
) -> bytes:
    """The letter (with its signatory lines, one list per group) as .docx bytes; the same input
    and `at` give the same bytes."""
    title, addressees = letter.title, letter.addressees
    document = docx.Document()
    width, height = PAGES.get(page_size, PAGES["A4"])
    for section in document.sections:
        section.page_width, section.page_height = width, height
    properties = document.core_properties
    properties.title = _xml_text(title)
    properties.author = properties.last_modified_by = "cosign"
    properties.created = properties.modified = at.replace(microsecond=0, tzinfo=None)
    properties.revision = 1
    normal = document.styles["Normal"].paragraph_format
    normal.space_after = _BLANK_LINE

    for index, line in enumerate(addressees):
        _tight(document.add_paragraph(_xml_text(line)), last=index == len(addressees) - 1)
    document.add_paragraph().add_run(_xml_text(f"Subject: {title}")).bold = True
    if letter.date:
        document.add_paragraph(_xml_text(letter.date))
    for block in parse_body(letter.body):
        _add_block(document, block, depth=0)
    if letter.closing:
        document.add_paragraph(_xml_text(letter.closing))
    if letter.signed_by:
        document.add_paragraph().add_run(_xml_text(letter.signed_by)).bold = True
    _add_signatories(document, groups)
    out = io.BytesIO()
    document.save(out)
    return _fixed_zip_times(out.getvalue(), at)


def _add_signatories(document: Document, groups: Sequence[Sequence[str]]) -> None:
    """One paragraph per line, in two styles: a group's first line, with a blank line's space
    before it and kept with the next line (a group never ends a page on its first line), and
    the others. Appended as copies of two prototype paragraphs: python-docx's add_paragraph
    searches the body for its insertion point each time, ~0.3 ms a line, 3 s for 10,000.
    """
    styles = document.styles
    line_style = styles.add_style(SIGNATORY_STYLE, WD_STYLE_TYPE.PARAGRAPH)
    line_style.base_style = styles["Normal"]
    line_style.paragraph_format.space_after = Pt(0)
    first_style = styles.add_style(FIRST_LINE_STYLE, WD_STYLE_TYPE.PARAGRAPH)
    first_style.base_style = line_style
    first_style.paragraph_format.space_before = _BLANK_LINE
    first_style.paragraph_format.keep_with_next = True
    prototypes = {
        style: document.add_paragraph("-", style=style)._p
        for style in (SIGNATORY_STYLE, FIRST_LINE_STYLE)
    }
    end = prototypes[SIGNATORY_STYLE]
    for lines in groups:
        for index, line in enumerate(lines):
            starts = index == 0 and len(lines) > 1
            paragraph = copy.deepcopy(prototypes[FIRST_LINE_STYLE if starts else SIGNATORY_STYLE])
            paragraph.find(_TEXT).text = _xml_text(line)
            end.addprevious(paragraph)
    for prototype in prototypes.values():
        prototype.getparent().remove(prototype)


def _xml_text(text: str) -> str:
    """Text without the characters XML 1.0 cannot hold (lxml refuses them; none is printable)."""
    return _NOT_XML.sub("", text)


def _tight(paragraph: Paragraph, *, last: bool) -> None:
    """Lines of one block: no space between them, a blank line's worth after the last."""
    paragraph.paragraph_format.space_after = _BLANK_LINE if last else Pt(0)


def _add_block(document: Document, block: Block, *, depth: int) -> None:
    if block.kind == "paragraph":
        _add_runs(document.add_paragraph(), block.runs)
    elif block.kind == "heading":
        _add_runs(document.add_heading(level=min(max(block.level, 1), 9)), block.runs)
    elif block.kind == "list":
        _add_list(document, block, depth=depth)
    elif block.kind == "quote":
        for inner in block.items[0] if block.items else []:
            if inner.kind == "paragraph":
                _add_runs(document.add_paragraph(style="Quote"), inner.runs)
            else:
                _add_block(document, inner, depth=depth)
    elif block.kind == "code":
        paragraph = document.add_paragraph()
        for number, line in enumerate(block.runs[0].text.split("\n") if block.runs else []):
            if number:
                paragraph.add_run().add_break(WD_BREAK.LINE)
            paragraph.add_run(_xml_text(line)).font.name = MONOSPACE
    elif block.kind == "rule":
        _bottom_border(document.add_paragraph())


def _add_list(document: Document, block: Block, *, depth: int) -> None:
    """Bullets as Word's list styles; numbers written out, so each list counts from its start."""
    level = "" if depth == 0 else f" {min(depth + 1, 3)}"
    style = f"List{level}" if block.ordered else f"List Bullet{level}"
    for number, item in enumerate(block.items, start=block.start):
        first = True
        for inner in item:
            if inner.kind == "paragraph" and first:
                paragraph = document.add_paragraph(style=style)
                paragraph.paragraph_format.space_after = Pt(0)
                if block.ordered:
                    paragraph.add_run(f"{number}.\t")
                _add_runs(paragraph, inner.runs)
            else:
                _add_block(document, inner, depth=depth + 1)
            first = False
    if document.paragraphs:
        document.paragraphs[-1].paragraph_format.space_after = _BLANK_LINE


def _add_runs(paragraph: Paragraph, runs: Sequence[Run]) -> None:
    for run in runs:
        if run.text == "\n":
            paragraph.add_run().add_break(WD_BREAK.LINE)
            continue
        if run.href:
            _add_link(paragraph, run)
            continue
        added = paragraph.add_run(_xml_text(run.text))
        added.bold = run.strong or None
        added.italic = run.em or None
        if run.code:
            added.font.name = MONOSPACE


def _add_link(paragraph: Paragraph, run: Run) -> None:
    """A hyperlink run (python-docx has no API to add one): a w:hyperlink to an external rel."""
    rel_id = paragraph.part.relate_to(run.href, RELATIONSHIP_TYPE.HYPERLINK, is_external=True)
    link = OxmlElement("w:hyperlink")
    link.set(qn("r:id"), rel_id)
    element = OxmlElement("w:r")
    props = OxmlElement("w:rPr")
    for tag, value in (("w:color", "0563C1"), ("w:u", "single")):
        prop = OxmlElement(tag)
        prop.set(qn("w:val"), value)
        props.append(prop)
    for tag, on in (("w:b", run.strong), ("w:i", run.em)):
        if on:
            props.append(OxmlElement(tag))
    element.append(props)
    text = OxmlElement("w:t")
    text.set(qn("xml:space"), "preserve")
    text.text = _xml_text(run.text)
    element.append(text)
    link.append(element)
    paragraph._p.append(link)


def _bottom_border(paragraph: Paragraph) -> None:
    borders = OxmlElement("w:pBdr")
    bottom = OxmlElement("w:bottom")
    for key, value in (("w:val", "single"), ("w:sz", "6"), ("w:space", "1"), ("w:color", "auto")):
        bottom.set(qn(key), value)
    borders.append(bottom)
    paragraph._p.get_or_add_pPr().append(borders)


def _fixed_zip_times(data: bytes, at: datetime) -> bytes:
    """python-docx stamps each zip entry with the current time; use `at`, for stable bytes."""
    stamp = (max(at.year, 1980), at.month, at.day, at.hour, at.minute, at.second)
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for entry in source.infolist():
            info = zipfile.ZipInfo(entry.filename, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(info, source.read(entry.filename))
    return out.getvalue()
