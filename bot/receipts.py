"""Receipts and audit anchors: what ties a published letter to the audit chain (DESIGN.md §10).

A receipt names the letter, its version, the SHA-256 of each output and the audit chain's head
right after the close (the `letter.closed` event, appended in the same transaction). Copied out
of the database (out/<slug>/receipt.json, the coordinators' chat), it lets `cosign audit
--verify` notice events deleted or rewritten up to that head, the newest ones included, which a
hash chain alone cannot: cut its tail and what is left still links up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.timeutil import iso_utc

RECEIPT_FORMAT = 1
#: A head as the chat shows it: SEQ:HASH, the hash in full or its first 16+ hex digits.
_ANCHOR = re.compile(r"^\s*(\d{1,18}):([0-9a-fA-F]{16,64})\s*$")


class AnchorError(ValueError):
    """A malformed --anchor; the message says what the form is."""


@dataclass(frozen=True)
class Anchor:
    """An audit head (seq, hash or a prefix of it) copied from a receipt or from chat."""

    seq: int
    hash: str

    def matches(self, event_hash: str) -> bool:
        return event_hash.startswith(self.hash)

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


def parse_anchor(text: str) -> Anchor:
    match = _ANCHOR.match(text)
    if match is None or int(match.group(1)) < 1:
        raise AnchorError(
            f"--anchor {text!r} is not SEQ:HASH (an audit event number, a colon and at least "
            "16 hex digits of its hash, as in a receipt: 1234:ab12cd34ef56ab78…)"
        )
    return Anchor(int(match.group(1)), match.group(2).lower())


def build_receipt(
    *,
    slug: str,
    version: int,
    text_sha256: str,
    signatories: int,
    outputs: Mapping[str, str],
    head_seq: int,
    head_hash: str,
    compiled_at: datetime,
) -> dict[str, Any]:
    return {
        "receipt": RECEIPT_FORMAT,
        "slug": slug,
        "version": version,
        "text_sha256": text_sha256,
        "signatories": signatories,
        "outputs": dict(sorted(outputs.items())),
        "audit_head": {"seq": head_seq, "hash": head_hash},
        "compiled_at": iso_utc(compiled_at),
    }


def receipt_json(receipt: Mapping[str, Any]) -> str:
    """receipt.json as written to out/<slug>/: stable key order, one final newline."""
    return json.dumps(receipt, ensure_ascii=False, indent=2) + "\n"


def receipt_head(receipt: Mapping[str, Any]) -> Anchor | None:
    """The receipt's audit head, or None when the stored receipt is not of this shape."""
    head = receipt.get("audit_head")
    if not isinstance(head, dict):
        return None
    seq, digest = head.get("seq"), head.get("hash")
    if not isinstance(seq, int) or not isinstance(digest, str) or not digest:
        return None
    return Anchor(seq, digest)
