"""Which fonts the PDF uses, and which signatory names they cannot draw (DESIGN.md §10).

Typst prints a character no font in its list has as an empty box, and says nothing. So the PDF
names its fonts exactly (no fallback to whatever else is installed) and this module reads the
character maps of those same fonts with fontTools: a name they do not cover is reported, never
printed as boxes silently. `[output].fonts` files join the list after the base fonts.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import typst
from fontTools.ttLib import TTFont, TTLibError

from bot.names import SignatoryGroup

log = logging.getLogger(__name__)

#: The letter's fonts, first choice first: DejaVu Serif (Debian's fonts-dejavu-core, which the
#: character check can read), then Libertinus Serif, built into the typst wheel, so a machine
#: without DejaVu still prints Latin text.
BASE_FAMILIES = ("DejaVu Serif", "Libertinus Serif")
#: What Libertinus Serif surely draws, assumed only when no font file of the list can be read
#: (the wheel's built-in fonts have no file): Basic Latin to Latin Extended-A.
_BUILTIN_COVERAGE = frozenset(range(0x20, 0x7F)) | frozenset(range(0xA0, 0x180))
#: Never drawn as a glyph: spaces, controls and joiners.
_INVISIBLE = ("Zs", "Zl", "Zp", "Cc", "Cf")


class FontError(Exception):
    """A font file that Typst or fontTools cannot read; the message names the file."""


@dataclass(frozen=True)
class Unprintable:
    """A signatory whose printed line has characters no font of the PDF can draw."""

    member_id: str
    line: str
    characters: str

    def message(self) -> str:
        return (
            f"no font of the PDF can draw {self.characters!r} in the name of {self.member_id} "
            f"({self.line}); add a font that has them with [output].fonts"
        )

    def as_json(self) -> dict[str, Any]:
        return {"member_id": self.member_id, "line": self.line, "characters": self.characters}


@dataclass(frozen=True)
class FontSet:
    """The fonts a PDF is typeset with: what to hand Typst, and which characters they cover."""

    families: tuple[str, ...]
    fonts: typst.Fonts
    coverage: frozenset[int]

    def missing(self, text: str) -> str:
        """The distinct characters of text that no font of the set draws, in order."""
        seen = dict.fromkeys(
            ch
            for ch in text
            if ord(ch) not in self.coverage and unicodedata.category(ch) not in _INVISIBLE
        )
        return "".join(seen)


def font_set(extra: Sequence[Path] = ()) -> FontSet:
    """The base fonts plus `[output].fonts`; built once per list in a process (~50 ms)."""
    return _font_set(tuple(Path(path).resolve() for path in extra))


@lru_cache(maxsize=8)
def _font_set(extra: tuple[Path, ...]) -> FontSet:
    directories = list(dict.fromkeys(str(path.parent) for path in extra))
    fonts = typst.Fonts(include_system_fonts=True, font_paths=directories)
    infos = fonts.fonts()
    extra_families: list[str] = []
    for path in extra:
        found = [info.family for info in infos if info.path and Path(info.path) == path]
        if not found:
            raise FontError(f"[output].fonts: {path} is not a font Typst can read")
        extra_families.extend(family for family in found if family not in extra_families)
    families = tuple(dict.fromkeys([*BASE_FAMILIES, *extra_families]))
    coverage: set[int] = set()
    readable = False
    for family in families:
        for file, index in _regular_files(infos, family):
            coverage |= _cmap(file, index)
            readable = True
    if not readable:
        coverage |= _BUILTIN_COVERAGE
    return FontSet(families, fonts, frozenset(coverage))


def _regular_files(infos: Iterable[typst.FontInfo], family: str) -> list[tuple[str, int]]:
    """The upright, regular-weight files of a family (names print in those), else all of it."""
    of_family = [info for info in infos if info.family == family and info.path]
    regular = [i for i in of_family if i.style == "normal" and i.weight == 400] or of_family
    return sorted({(str(info.path), info.index) for info in regular})


@lru_cache(maxsize=64)
def _cmap(path: str, index: int) -> frozenset[int]:
    try:
        with TTFont(path, fontNumber=index, lazy=True) as font:
            return frozenset(font.getBestCmap() or {})
    except (OSError, TTLibError) as exc:
        raise FontError(f"cannot read the font {path}: {exc}") from None


def unprintable(groups: Iterable[SignatoryGroup], fonts: FontSet) -> list[Unprintable]:
    """Every signatory whose line the PDF would print with empty boxes, in letter order."""
    found: list[Unprintable] = []
    for group in groups:
        group_missing = fonts.missing(group.name)
        for person in group.signatories:
            missing = fonts.missing(person.name + group_missing)
            if missing:
                found.append(Unprintable(person.member_id, person.line, missing))
    return found
