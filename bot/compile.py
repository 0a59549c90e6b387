"""Rendering a letter with its signatories into txt, md, html, csv and json, and (through
bot.pdf and bot.docx_output, imported only when used) pdf and docx (no I/O)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import nh3
from markdown_it import MarkdownIt

from bot.names import Signatory, SignatoryGroup, signatory_blocks
from bot.templating import Safe, render
from bot.timeutil import iso_utc

if TYPE_CHECKING:
    from bot.pdf import PrintOptions

FORMATS = ("txt", "md", "html", "csv", "json")
LETTER_FILES = ("txt", "md", "html")
DOCUMENT_FORMATS = ("pdf", "docx")  # bytes, not text: stored as CompiledFile rows

# html=False: raw HTML in the letter body is shown as text, never passed through.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_ALLOWED_TAGS = {
    "p",
    "br",
    "em",
    "strong",
    "a",
    "ul",
    "ol",
    "li",
    "blockquote",
    "code",
    "pre",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
}


@dataclass(frozen=True)
class LetterText:
    slug: str
    title: str
    date: str
    addressees: Sequence[str]
    body: str
    closing: str
    signed_by: str
    leads: Sequence[str] = ()  # member_ids printed first, in this order, when they signed


def body_to_html(body: str) -> str:
    """Render the letter's Markdown and sanitise it: the body is data, never trusted markup."""
    rendered = _markdown.render(body)
    return nh3.clean(
        rendered,
        tags=_ALLOWED_TAGS,
        attributes={"a": {"href", "title"}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


def render_formats(
    letter: LetterText, signatories: Sequence[Signatory], formats: Sequence[str]
) -> dict[str, str]:
    """Several formats from one grouping and sorting (closing a letter renders all five)."""
    groups = signatory_blocks(signatories, letter.leads)
    return {fmt: render_letter(letter, signatories, fmt, groups=groups) for fmt in formats}


def render_letter(
    letter: LetterText, signatories: Sequence[Signatory], fmt: str,
    *, groups: list[SignatoryGroup] | None = None,
) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if groups is None:
        groups = signatory_blocks(signatories, letter.leads)
    if fmt == "csv":
        return render_csv(groups)
    if fmt == "json":
        return render_json(letter, groups)
    context = {
        "title": letter.title,
        "date": letter.date,
        "addressees": list(letter.addressees),
        "closing": letter.closing,
        "signed_by": letter.signed_by,
        "groups": groups,
    }
    if fmt == "txt":
        return render("letter.txt.j2", "text", body=letter.body, **context)
    if fmt == "md":
        # The body is the letter's own Markdown, as written; everything else is escaped.
        return render(
            "letter.md.j2", "md", body=Safe(letter.body), hard_break=Safe("\\"), **context
        )
    return render("letter.html.j2", "html", body_html=Safe(body_to_html(letter.body)), **context)


def signatory_lines(groups: Sequence[SignatoryGroup]) -> list[list[str]]:
    """The signatory block as the documents print it: each group's lines, in letter order (the
    leads' block, when there is one, first: see bot.names.signatory_blocks)."""
    return [[s.line for s in group.signatories] for group in groups]


def render_document(
    letter: LetterText,
    lines: Sequence[Sequence[str]],
    fmt: str,
    *,
    options: PrintOptions,
    at: datetime,
) -> bytes:
    """pdf or docx bytes of the letter with its signatory lines (see signatory_lines)."""
    if fmt == "pdf":
        from bot.pdf import render_pdf

        return render_pdf(letter, lines, options=options, at=at)
    if fmt == "docx":
        from bot.docx_output import render_docx

        return render_docx(letter, lines, page_size=options.page_size, at=at)
    raise ValueError(f"unknown document format {fmt!r}; choose one of {DOCUMENT_FORMATS}")


def render_csv(groups: Sequence[SignatoryGroup]) -> str:
    """Signatories in letter order; cells starting with = + - @ get a quote (formula injection)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["group", "name", "member_id", "signed_at", "via"])
    for group in groups:
        for s in group.signatories:
            writer.writerow(
                [
                    _csv_cell(s.group),
                    _csv_cell(s.name),
                    _csv_cell(s.member_id),
                    iso_utc(s.signed_at) if s.signed_at else "",
                    s.via,
                ]
            )
    return out.getvalue()


def _csv_cell(value: str) -> str:
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _json_signatory(s: Signatory, *, with_group: bool = False) -> dict[str, object]:
    entry: dict[str, object] = {"member_id": s.member_id, "name": s.name}
    if with_group:
        entry["group"] = s.group
    entry["signed_at"] = iso_utc(s.signed_at) if s.signed_at else None
    entry["via"] = s.via
    return entry


def render_json(letter: LetterText, groups: Sequence[SignatoryGroup]) -> str:
    """`leads`: the signed leads, in the order printed; `groups`: everyone else, by group."""
    leads = [s for g in groups if g.leads for s in g.signatories]
    document = {
        "slug": letter.slug,
        "title": letter.title,
        "date": letter.date,
        "addressees": list(letter.addressees),
        "body": letter.body,
        "closing": letter.closing,
        "signed_by": letter.signed_by,
        "signatures": sum(len(g.signatories) for g in groups),
        "leads": [_json_signatory(s, with_group=True) for s in leads],
        "groups": [
            {"group": g.name, "signatories": [_json_signatory(s) for s in g.signatories]}
            for g in groups
            if not g.leads
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def sha256_hex(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()
