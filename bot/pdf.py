"""The compiled letter as a PDF, typeset by Typst (the `typst` wheel: no system libraries).

Chosen over WeasyPrint by measurement (README, "The published letter"): 10,000 signatories in
well under a second where WeasyPrint took ~30 s. The letter and every name reach Typst only as
JSON data in `sys.inputs` that templates/letter.typ reads; nothing is spliced into its markup.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import typst

from bot.compile import LetterText
from bot.config import OutputSettings
from bot.fonts import FontError, FontSet, font_set
from bot.richtext import parse_body

TEMPLATE = "letter.typ"
PAPER = {"A4": "a4", "Letter": "us-letter"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")


class PdfError(Exception):
    """The PDF cannot be made (a letterhead or font problem); the message is one line."""


@dataclass(frozen=True)
class PrintOptions:
    """`[output]` as the PDF needs it: paper, an optional letterhead, extra font files."""

    page_size: str = "A4"
    letterhead: Path | None = None
    fonts: Sequence[Path] = field(default_factory=tuple)

    @classmethod
    def from_settings(cls, output: OutputSettings) -> PrintOptions:
        return cls(output.page_size, output.letterhead, tuple(output.fonts))

    def font_set(self) -> FontSet:
        try:
            return font_set(self.fonts)
        except FontError as exc:
            raise PdfError(str(exc)) from None


@lru_cache(maxsize=1)
def _template() -> bytes:
    return resources.files("bot.templates").joinpath(TEMPLATE).read_bytes()


def render_pdf(
    letter: LetterText, groups: Sequence[Sequence[str]], *, options: PrintOptions, at: datetime
) -> bytes:
    """The letter with its signatory lines (one list per group, in letter order) as PDF bytes.

    `at` is the document's date (the close, for the stored PDF): the same input and `at` give
    the same bytes.
    """
    if options.page_size not in PAPER:
        raise PdfError(f"[output].page_size: unknown page size {options.page_size!r}")
    fonts = options.font_set()
    root, letterhead = _letterhead(options.letterhead)
    data: dict[str, Any] = {
        "paper": PAPER[options.page_size],
        "fonts": list(fonts.families),
        "letterhead": letterhead,
        "title": letter.title,
        "date": letter.date,
        "addressees": list(letter.addressees),
        "body": [block.as_json() for block in parse_body(letter.body)],
        "closing": letter.closing,
        "signed_by": letter.signed_by,
        "groups": [list(lines) for lines in groups if lines],
    }
    compiler = typst.Compiler(
        root=str(root) if root else None,
        font_paths=fonts.fonts,
        sys_inputs={"data": json.dumps(data, ensure_ascii=False)},
    )
    try:
        pdf = compiler.compile(_template(), format="pdf", timestamp=at.replace(microsecond=0))
    except typst.TypstError as exc:
        where = f"[output].letterhead {options.letterhead}: " if letterhead else ""
        raise PdfError(f"{where}Typst could not make the PDF: {exc.message}") from None
    assert isinstance(pdf, bytes)
    return pdf


def _letterhead(path: Path | None) -> tuple[Path | None, dict[str, str] | None]:
    """(Typst's root folder, the template's view of the letterhead) for `[output].letterhead`."""
    if path is None:
        return None, None
    if not path.is_file():
        raise PdfError(f"[output].letterhead: file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".typ":
        kind = "typst"
    elif suffix in IMAGE_SUFFIXES:
        kind = "image"
    else:
        raise PdfError(f"[output].letterhead: {path} is not a Typst file (.typ) or an image")
    resolved = path.resolve()
    # Typst reads files only under its root: the letterhead's folder, so it can use its images.
    return resolved.parent, {"kind": kind, "path": "/" + resolved.name}
