"""How signatories print and in which order (DESIGN.md §4)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from pyuca import Collator

_collator: Collator | None = None


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _get_collator() -> Collator:
    global _collator
    if _collator is None:
        _collator = Collator()  # DUCET root order; built once, it takes ~0.3 s
    return _collator


@lru_cache(maxsize=65536)
def collation_key(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(UCA primary weights, full UCA key): accents, strokes and case never change where a word
    files; the full key only breaks ties between primary-equal strings. One pyuca call a string.
    """
    full = tuple(_get_collator().sort_key(nfc(text)))
    try:
        primary = full[: full.index(0)]  # 0 separates the levels: the primary level ends there
    except ValueError:
        primary = full
    return (primary, full)


def render_name(
    *, title: str, given_name: str, family_name: str, post_nominals: str, display_name: str = ""
) -> str:
    if display_name.strip():
        return nfc(display_name.strip())
    parts = [title, given_name, family_name, post_nominals]
    return nfc(" ".join(part.strip() for part in parts if part and part.strip()))


@dataclass(frozen=True)
class Signatory:
    member_id: str
    name: str
    group: str
    family_name: str
    given_name: str
    signed_at: datetime | None = None
    via: str = ""

    def __post_init__(self) -> None:
        for name in ("name", "group", "family_name", "given_name"):
            object.__setattr__(self, name, nfc(getattr(self, name)))

    @property
    def line(self) -> str:
        return f"{self.name} ({self.group})"

    def sort_key(self) -> tuple[object, ...]:
        return (
            collation_key(self.family_name),
            collation_key(self.given_name),
            self.member_id,
        )


@dataclass(frozen=True)
class SignatoryGroup:
    name: str
    signatories: list[Signatory]


def group_signatories(signatories: Iterable[Signatory]) -> list[SignatoryGroup]:
    """Groups in collation order of their name; members by family, given name, member_id."""
    by_group: dict[str, list[Signatory]] = {}
    for signatory in signatories:
        by_group.setdefault(nfc(signatory.group), []).append(signatory)
    ordered = sorted(by_group, key=lambda name: (collation_key(name), name))
    return [
        SignatoryGroup(name, sorted(by_group[name], key=Signatory.sort_key)) for name in ordered
    ]
