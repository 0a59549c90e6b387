"""The letter file: Markdown with TOML front matter between +++ lines.

The body is data: it is stored and printed as written (NFC) and never evaluated as a template.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from bot.names import nfc
from bot.timeutil import BadTime, format_utc, parse_when

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
TEMPLATES = ("letter",)
_REQUIRED = ("slug", "title", "deadline", "addressees")
_KNOWN = {
    "slug",
    "title",
    "date",
    "deadline",
    "closing",
    "signed_by",
    "addressees",
    "template",
    "proxy",
    "leads",
    "visibility",
    "embargo",
}
VISIBILITIES = ("public", "counts", "private")  # what members see of who signed (§8)
PROXY_MODES = ("direct", "confirm")  # staff signatures count at once, or await the member (§8)


class LetterFileError(ValueError):
    """The letter file is malformed; the message says where."""


@dataclass
class LetterSource:
    slug: str
    title: str
    date: str
    deadline: datetime | None
    closing: str
    signed_by: str
    addressees: list[str]
    body: str
    template: str = ""
    proxy: str = ""  # "" = [letters].proxy
    extra: dict[str, object] = field(default_factory=dict)
    # leads: member_ids printed first (checked against the roster where the letter is stored);
    # visibility: "" = [letters].visibility; embargo: when the names are published (§8).
    leads: list[str] = field(default_factory=list)
    visibility: str = ""
    embargo: datetime | None = None

    @property
    def version(self) -> str:
        return letter_version(
            title=self.title,
            date=self.date,
            addressees=self.addressees,
            body=self.body,
            closing=self.closing,
            signed_by=self.signed_by,
        )


def letter_version(
    *, title: str, date: str, addressees: list[str], body: str, closing: str, signed_by: str
) -> str:
    """SHA-256 of the text a signer reads, so a signature records which text was signed."""
    canonical = json.dumps(
        [title, date, addressees, body, closing, signed_by],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_letter(text: str, *, zone: tzinfo, now: datetime) -> LetterSource:
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    lines = text.split("\n")
    if not lines or lines[0].strip() != "+++":
        raise LetterFileError("line 1: the file must start with a '+++' line (TOML front matter)")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "+++")
    except StopIteration:
        raise LetterFileError("the front matter is not closed: no second '+++' line") from None
    try:
        meta = tomllib.loads("\n".join(lines[1:end]))
    except tomllib.TOMLDecodeError as exc:
        raise LetterFileError(f"front matter is not valid TOML: {exc}") from None
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise LetterFileError("front matter is missing: " + ", ".join(missing))
    unknown = sorted(set(meta) - _KNOWN)
    if unknown:
        raise LetterFileError("front matter has unknown keys: " + ", ".join(unknown))
    for key in ("slug", "title", "date", "closing", "signed_by", "template", "proxy", "visibility"):
        if key in meta and not isinstance(meta[key], str):
            raise LetterFileError(f"front matter: {key} must be a string")
    addressees = meta["addressees"]
    if not isinstance(addressees, list) or not all(isinstance(a, str) for a in addressees):
        raise LetterFileError("front matter: addressees must be a list of strings")
    slug = meta["slug"]
    if not SLUG.fullmatch(slug):  # not .match: "$" would let a trailing newline through
        raise LetterFileError(
            f"front matter: slug {slug!r} must be lowercase letters, digits and '-' (max 100)"
        )
    template = meta.get("template", "")
    if template and template not in TEMPLATES:
        raise LetterFileError(
            f"front matter: unknown template {template!r} (known: {', '.join(TEMPLATES)})"
        )
    proxy = meta.get("proxy", "").strip().lower()
    if proxy and proxy not in PROXY_MODES:
        raise LetterFileError(
            f"front matter: proxy must be {' or '.join(PROXY_MODES)}, not {meta['proxy']!r}"
        )
    if not meta["title"].strip():
        raise LetterFileError("front matter: title is empty")
    deadline = _read_deadline(meta["deadline"], zone=zone, now=now)
    leads, visibility, embargo = _read_campaign(meta, deadline=deadline, zone=zone, now=now)
    body_lines = lines[end + 1 :]
    while body_lines and not body_lines[0].strip():
        body_lines.pop(0)
    body = "\n".join(body_lines).rstrip()
    if not body.strip():
        raise LetterFileError("the letter has no body after the front matter")
    return LetterSource(
        slug=slug,
        title=nfc(meta["title"].strip()),
        date=nfc(meta.get("date", "").strip()),
        deadline=deadline,
        closing=nfc(meta.get("closing", "").strip()),
        signed_by=nfc(meta.get("signed_by", "").strip()),
        addressees=[nfc(a.strip()) for a in addressees if a.strip()],
        body=nfc(body),
        template=template,
        proxy=proxy,
        leads=leads,
        visibility=visibility,
        embargo=embargo,
    )


def _read_campaign(
    meta: dict[str, object], *, deadline: datetime, zone: tzinfo, now: datetime
) -> tuple[list[str], str, datetime | None]:
    """leads, visibility and embargo (DESIGN.md §8), each checked on its own."""
    raw_leads = meta.get("leads", [])
    if not isinstance(raw_leads, list) or not all(isinstance(v, str) for v in raw_leads):
        raise LetterFileError('front matter: leads must be a list of member_ids, e.g. ["au-abetz"]')
    leads = [nfc(v.strip()) for v in raw_leads if v.strip()]
    repeated = sorted({v for v in leads if leads.count(v) > 1})
    if repeated:
        raise LetterFileError("front matter: leads names twice: " + ", ".join(repeated))
    visibility = str(meta.get("visibility", "")).strip().lower()
    if visibility and visibility not in VISIBILITIES:
        raise LetterFileError(
            f"front matter: visibility must be {', '.join(VISIBILITIES)}, "
            f"not {meta['visibility']!r}"
        )
    embargo = None
    if "embargo" in meta:
        embargo = _read_deadline(meta["embargo"], zone=zone, now=now, key="embargo")
        check_embargo(embargo, deadline)
    return leads, visibility, embargo


def check_embargo(embargo: datetime | None, deadline: datetime) -> None:
    """An embargo ends when the names are published: never before signing closes."""
    if embargo is not None and embargo < deadline:
        raise LetterFileError(
            f"front matter: embargo {format_utc(embargo)} is before the deadline "
            f"{format_utc(deadline)}: the names cannot be published before signing closes"
        )


def _read_deadline(
    value: object, *, zone: tzinfo, now: datetime, key: str = "deadline"
) -> datetime:
    if isinstance(value, datetime):
        return parse_when(value.isoformat(), now=now, zone=zone)
    if isinstance(value, str):
        try:
            return parse_when(value, now=now, zone=zone)
        except BadTime as exc:
            raise LetterFileError(f"front matter: {key}: {exc}") from None
    raise LetterFileError(f"front matter: {key} must be an ISO 8601 date-time")
