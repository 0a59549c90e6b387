"""How signatories print and in which order (DESIGN.md §4)."""

from __future__ import annotations

import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple, Protocol, TypeVar

from pyuca import Collator

_collator: Collator | None = None

# Bump when filing_key's layout or render_name's rule changes: stored keys (and printed names,
# bot.models.member) whose key lacks the current prefix are recomputed.
FILING_KEY_FORMAT = 1
FILING_KEY_PREFIX = format(
    zlib.crc32(f"cosign-filing-key/{FILING_KEY_FORMAT}/uca-{Collator.UCA_VERSION}".encode()), "08x"
)
_END = "\x01"  # ends a name's weights: below every weight character, and not NUL (PostgreSQL)
_SURROGATES = range(0xD800, 0xE000)  # not storable as UTF-8: weight characters skip them


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def email_key(address: str) -> str:
    """How a roster e-mail is looked up: NFC, trimmed, lower case (as providers treat it)."""
    return nfc(address).strip().lower()


# Unicode categories no displayed name needs: controls (Cc: terminal escapes), format characters
# (Cf: bidi overrides, zero-width spaces), line and paragraph separators (Zl, Zp), lone surrogates.
# The zero-width (non-)joiner are Cf too, but Persian and Indic names are spelt with them.
_UNPRINTABLE = {"Cc", "Cf", "Zl", "Zp", "Cs"}
_JOINERS = {"\u200c", "\u200d"}
_BREAKS = {"\t", "\n", "\r", "\u2028", "\u2029", "\x0b", "\x0c", "\x85"}  # become spaces


def clean_platform_text(text: str, *, limit: int = 200) -> str:
    """A name that came from a chat platform, safe to store and show in a terminal.

    Display names are chosen by anyone: an escape sequence or a right-to-left override in one
    would reach coordinators' terminals through `cosign status` and the console.
    """
    kept = "".join(
        " " if ch in _BREAKS else ch
        for ch in nfc(text)
        if ch in _BREAKS or ch in _JOINERS or unicodedata.category(ch) not in _UNPRINTABLE
    )
    return " ".join(kept.split())[:limit]


def collator() -> Collator:
    global _collator
    if _collator is None:
        _collator = Collator()  # DUCET root order; built once, it takes ~0.3 s
    return _collator


@lru_cache(maxsize=65536)
def collation_key(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(UCA primary weights, full UCA key): accents, strokes and case never change where a word
    files; the full key only breaks ties between primary-equal strings. One pyuca call a string.
    """
    full = tuple(collator().sort_key(nfc(text)))
    try:
        primary = full[: full.index(0)]  # 0 separates the levels: the primary level ends there
    except ValueError:
        primary = full
    return (primary, full)


def _weight_char(weight: int) -> str:
    code = weight + 2  # weights start at 0 (level separators); 0 and 1 are reserved
    return chr(code + len(_SURROGATES) if code >= _SURROGATES.start else code)


def _weights_text(weights: tuple[int, ...]) -> str:
    """One character a weight, in the same order, then _END: str order equals tuple order."""
    return "".join(map(_weight_char, weights)) + _END


def filing_family(family_name: str, display_name: str) -> str:
    """A member with only a display name files under it."""
    return family_name or display_name


def filing_key(*, family_name: str, given_name: str, member_id: str) -> str:
    """Signatory.sort_key as one string that compares (in Python, by code point) the same way.

    Stored on each member (bot.models.member) so that listing 10,000 names needs no collation;
    FILING_KEY_PREFIX marks the format and UCA table. Sort by it in Python, never in SQL (the
    database's text collation is not code point order). Weights up to 0x10FFFF - 0x802 fit;
    UCA weights, implicit ones included, stay below 0x10000.
    """
    parts = [FILING_KEY_PREFIX]
    for text in (family_name, given_name):
        # The full key alone orders as (primary, full) does: it starts with the primary weights
        # and a 0 separator, lower than any primary weight; so it is half the length.
        _primary, full = collation_key(text)
        parts.append(_weights_text(full))
    parts.append(member_id)
    return "".join(parts)


def is_current_filing_key(key: str | None) -> bool:
    """A stored key of this format and UCA table (else it and the printed name are recomputed)."""
    return key is not None and key.startswith(FILING_KEY_PREFIX)


def render_name(
    *, title: str, given_name: str, family_name: str, post_nominals: str, display_name: str = ""
) -> str:
    display = display_name.strip()
    if display:
        return nfc(display)
    parts = (title.strip(), given_name.strip(), family_name.strip(), post_nominals.strip())
    return nfc(" ".join(filter(None, parts)))


@dataclass(slots=True)  # not frozen: a frozen init costs 3× as much, over 10,000 rows per status
class Signatory:
    member_id: str
    name: str
    group: str
    family_name: str
    given_name: str
    signed_at: datetime | None = None
    via: str = ""

    def __post_init__(self) -> None:
        self.name = nfc(self.name)
        self.group = nfc(self.group)
        self.family_name = nfc(self.family_name)
        self.given_name = nfc(self.given_name)

    @property
    def line(self) -> str:
        return f"{self.name} ({self.group})"

    def sort_key(self) -> tuple[object, ...]:
        return (
            collation_key(self.family_name),
            collation_key(self.given_name),
            self.member_id,
        )

    def filing_key(self) -> str:
        return filing_key(
            family_name=self.family_name, given_name=self.given_name, member_id=self.member_id
        )


@dataclass(frozen=True)
class SignatoryGroup:
    name: str
    signatories: list[Signatory]
    leads: bool = False  # the leads' block: first, in the order listed, each line its own group


def group_key(name: str) -> tuple[object, ...]:
    return (collation_key(name), name)


class _InGroup(Protocol):
    @property
    def group(self) -> str: ...


_Person = TypeVar("_Person", bound=_InGroup)


def _by_group(people: Iterable[_Person]) -> list[tuple[str, list[_Person]]]:
    """(group, its people in the order given), groups in collation order of their name."""
    by_group: dict[str, list[_Person]] = {}
    for person in people:
        by_group.setdefault(person.group, []).append(person)
    return [(name, by_group[name]) for name in sorted(by_group, key=group_key)]


def group_signatories(signatories: Iterable[Signatory]) -> list[SignatoryGroup]:
    """Groups in collation order of their name; members by family, given name, member_id."""
    return [
        SignatoryGroup(name, sorted(people, key=Signatory.sort_key))
        for name, people in _by_group(signatories)
    ]


def signatory_blocks(
    signatories: Iterable[Signatory], leads: Sequence[str] = ()
) -> list[SignatoryGroup]:
    """The signatory block as every format prints it (DESIGN.md §8): the leads who signed, in
    the order listed, as one block of their own, then the groups of everyone else. A lead who
    has not signed is simply absent; without leads this is group_signatories.
    """
    people = list(signatories)
    if not leads:
        return group_signatories(people)
    by_id = {person.member_id: person for person in people}
    first = [by_id[member_id] for member_id in leads if member_id in by_id]
    chosen = {person.member_id for person in first}
    rest = group_signatories(p for p in people if p.member_id not in chosen)
    return ([SignatoryGroup("", first, leads=True)] if first else []) + rest


class ListedSignatory(NamedTuple):
    """A name as status lists it: a tuple, not a Signatory, because status builds 10,000 of them
    per request and sorts them by stored filing keys rather than by collating the names.
    """

    member_id: str
    name: str
    group: str
    signed_at: datetime | None = None
    via: str = ""

    @property
    def line(self) -> str:
        return f"{self.name} ({self.group})"


def in_letter_order(people: Iterable[ListedSignatory]) -> list[ListedSignatory]:
    """Grouped as group_signatories groups; people must arrive in filing order already."""
    return [person for _, group in _by_group(people) for person in group]
