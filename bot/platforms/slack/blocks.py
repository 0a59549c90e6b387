"""Block Kit layouts for Slack, within Slack's limits (no I/O).

Limits (DESIGN.md §6 rule 8): ≤ 50 blocks a message, ≤ 3000 characters a section text, header
≤ 150 plain-text characters, and an undocumented combined limit around 12k characters of blocks
(`msg_blocks_too_long`). A letter that does not fit is posted as a summary with the full text as a
file; nothing is cut silently. Every roster-, letter- or user-derived string is mrkdwn-escaped or
put in plain_text.
"""

from __future__ import annotations

from typing import Any

from bot.publishing import LetterView
from bot.templating import escape_mrkdwn
from bot.timeutil import format_utc

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_BLOCK_CHARS = 11_000  # stay clear of msg_blocks_too_long
MAX_FALLBACK = 3_000
SIGN_ACTION = "cosign_sign"
WITHDRAW_ACTION = "cosign_withdraw"
CONFIRM_ACTION = "cosign_sign_confirm"
CANCEL_ACTION = "cosign_cancel"

Block = dict[str, Any]


def plain(text: str, limit: int | None = None) -> dict[str, Any]:
    value = text if limit is None or len(text) <= limit else text[: limit - 1] + "…"
    return {"type": "plain_text", "text": value, "emoji": False}


def section(mrkdwn: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn, "verbatim": True}}


def chunk(text: str, limit: int = MAX_SECTION) -> list[str]:
    """Split at paragraph, then line, then word boundaries; never drops a character."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = -1
        for separator in ("\n\n", "\n", " "):
            cut = rest.rfind(separator, 0, limit)
            if cut > 0:
                break
        if cut <= 0:
            cut = limit
        pieces.append(rest[:cut])
        rest = rest[cut:].lstrip("\n") if rest[cut : cut + 1] == "\n" else rest[cut:]
    if rest.strip():
        pieces.append(rest)
    return [piece for piece in pieces if piece.strip()]


def text_blocks(mrkdwn: str) -> list[Block] | None:
    """Sections for a reply; None when it cannot fit one message (send it as a file)."""
    chunks = chunk(mrkdwn)
    if len(chunks) > MAX_BLOCKS or sum(len(c) for c in chunks) > MAX_BLOCK_CHARS:
        return None
    return [section(c) for c in chunks] or [section(" ")]


def fallback(text: str) -> str:
    return text if len(text) <= MAX_FALLBACK else text[: MAX_FALLBACK - 1] + "…"


def counter_line(letter: LetterView) -> str:
    count = f"{letter.count} signature{'' if letter.count == 1 else 's'}"
    if letter.state == "closed":
        closed = format_utc(letter.closed_at or letter.deadline)
        return f"🔒 Signing closed at {closed} with {count}."
    return f"Open for signing until {letter.deadline_text} · {count} so far"


def letter_fits(letter: LetterView) -> bool:
    body = chunk(escape_mrkdwn(letter.text))
    return len(body) + 4 <= MAX_BLOCKS and sum(len(c) for c in body) <= MAX_BLOCK_CHARS


def letter_blocks(letter: LetterView, *, with_file: bool) -> list[Block]:
    """The letter post: header, text (or a summary beside the file), counter, buttons."""
    blocks: list[Block] = [{"type": "header", "text": plain(letter.title, MAX_HEADER)}]
    if len(letter.title) > MAX_HEADER:
        blocks.append(section(f"*{escape_mrkdwn(letter.title)}*"))
    if with_file:
        summary = chunk(escape_mrkdwn(letter.body), 2500)[0]
        blocks.append(section(summary + "\n\n…"))
        blocks.append(section("_The full text of the letter is in the attached file._"))
    else:
        blocks.extend(section(c) for c in chunk(escape_mrkdwn(letter.text)))
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": escape_mrkdwn(counter_line(letter))}],
        }
    )
    if letter.state != "closed":
        blocks.append(
            {
                "type": "actions",
                "block_id": f"cosign:{letter.slug}"[:255],
                "elements": [
                    {
                        "type": "button",
                        "action_id": SIGN_ACTION,
                        "style": "primary",
                        "text": plain("Sign"),
                        "value": letter.slug,
                    },
                    {
                        "type": "button",
                        "action_id": WITHDRAW_ACTION,
                        "text": plain("Withdraw"),
                        "value": letter.slug,
                    },
                ],
            }
        )
    return blocks


def letter_fallback(letter: LetterView) -> str:
    return escape_mrkdwn(f"{letter.title} ({letter.slug}): {counter_line(letter)}")


def confirm_blocks(slug: str, label: str, title: str) -> list[Block]:
    """The confirmation a Sign click opens; the member's name is plain text (no mentions)."""
    return [
        {"type": "section", "text": plain(f"Sign “{title}” as {label}?"[:MAX_SECTION])},
        {
            "type": "actions",
            "block_id": f"confirm:{slug}"[:255],
            "elements": [
                {
                    "type": "button",
                    "action_id": CONFIRM_ACTION,
                    "style": "primary",
                    "text": plain("Confirm"),
                    "value": slug,
                },
                {
                    "type": "button",
                    "action_id": CANCEL_ACTION,
                    "text": plain("Cancel"),
                    "value": slug,
                },
            ],
        },
    ]
