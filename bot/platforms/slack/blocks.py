"""Block Kit layouts for Slack, within Slack's limits (no I/O).

Limits (DESIGN.md §6 rule 8): ≤ 50 blocks a message, ≤ 3000 characters a section text, header
≤ 150 plain-text characters, and an undocumented combined limit around 12k characters of blocks
(`msg_blocks_too_long`): we keep the text of all blocks together ≤ MAX_BLOCK_CHARS. A letter that
does not fit is posted as a summary with the full text as a file; nothing is cut silently. Every
roster-, letter- or user-derived string is mrkdwn-escaped or put in plain_text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
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
#: The Re-confirm button of the direct message a signer gets after a material change (DESIGN.md
#: §9); its value is what follows `sign` (`SLUG`, or `SLUG for MEMBER_ID` for staff).
RECONFIRM_ACTION = "cosign_reconfirm"
#: The buttons a direct message may carry (its payload's context "button": {"action", "value"}),
#: by action: (action_id, label).
DM_BUTTONS = {"reconfirm": (RECONFIRM_ACTION, "Re-confirm")}
MAX_BUTTON_VALUE = 2000
# The counter grows after a letter is posted ("1 signature" → "250000 signatures"); whether a
# letter fits is judged with a count this wide, so the choice made at posting (inline or as a file)
# holds at every later count and edits never break the limit.
COUNT_RESERVE = 999_999_999
FILE_NOTE = "_The full text of the letter is in the attached file._"
SUMMARY_CHARS = 2500

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


def dm_button(button: Any) -> Block | None:
    """The actions block for a direct message's button; None when there is none, or its action
    is unknown, or Slack would refuse its value (the message's text says what to type anyway)."""
    if not isinstance(button, dict):
        return None
    known = DM_BUTTONS.get(str(button.get("action") or ""))
    value = str(button.get("value") or "")
    if known is None or not value or len(value) > MAX_BUTTON_VALUE:
        return None
    action_id, label = known
    return {
        "type": "actions",
        "block_id": f"{action_id}:{value}"[:255],
        "elements": [
            {
                "type": "button",
                "action_id": action_id,
                "style": "primary",
                "text": plain(label),
                "value": value,
            }
        ],
    }


def text_blocks_with(mrkdwn: str, actions: Block | None) -> list[Block] | None:
    """text_blocks with an actions block after the text; None when both do not fit one message
    (then the text goes as a file and the button on its own, never dropped)."""
    blocks = text_blocks(mrkdwn)
    if blocks is None or actions is None:
        return blocks
    blocks = [*blocks, actions]
    return blocks if within_limits(blocks) else None


def button_prompt(context: dict[str, Any]) -> str:
    """The line above a button sent on its own (after a direct message sent as a file), as
    plain text: the title and name are the roster's and the letter's, never mrkdwn."""
    title = str(context.get("title") or context.get("slug") or "the letter")
    version = context.get("version")
    of_text = f" (version {version})" if version else ""
    if context.get("for_member"):
        whose = f"the signature you gave for {context.get('name') or 'your member'}"
    else:
        whose = "your signature"
    return f"Press Re-confirm to re-confirm {whose} on “{title}”{of_text}."


def fallback(text: str) -> str:
    return text if len(text) <= MAX_FALLBACK else text[: MAX_FALLBACK - 1] + "…"


def counter_line(letter: LetterView) -> str:
    if letter.count is None:  # a private letter: no number (DESIGN.md §8)
        if letter.state == "closed":
            return f"🔒 Signing closed at {format_utc(letter.closed_at or letter.deadline)}."
        return f"Open for signing until {letter.deadline_text}"
    count = f"{letter.count} signature{'' if letter.count == 1 else 's'}"
    if letter.state == "closed":
        closed = format_utc(letter.closed_at or letter.deadline)
        return f"🔒 Signing closed at {closed} with {count}."
    return f"Open for signing until {letter.deadline_text} · {count} so far"


def block_chars(node: Any) -> int:
    """Characters of every text object in blocks: what Slack's combined limit is measured on."""
    if isinstance(node, list):
        return sum(block_chars(item) for item in node)
    if not isinstance(node, dict):
        return 0
    own = node.get("text") if node.get("type") in {"plain_text", "mrkdwn"} else None
    return (len(own) if isinstance(own, str) else 0) + sum(
        block_chars(value) for value in node.values() if isinstance(value, dict | list)
    )


def within_limits(blocks: list[Block]) -> bool:
    return len(blocks) <= MAX_BLOCKS and block_chars(blocks) <= MAX_BLOCK_CHARS


def letter_fits(letter: LetterView) -> bool:
    """Whether the whole letter fits one post, open or closed, at any count up to COUNT_RESERVE.

    Measured on the blocks letter_blocks really emits, so nothing it adds is left uncounted; the
    answer depends only on the title and text, so a post never switches layout when edited.
    """
    return all(
        within_limits(
            letter_blocks(
                replace(letter, state=state, count=COUNT_RESERVE, closed_at=None), with_file=False
            )
        )
        for state in ("open", "closed")
    )


def _title_blocks(letter: LetterView, *, limit: int | None) -> list[Block]:
    """A title too long for the header, shown whole in sections (or up to limit beside a file)."""
    if len(letter.title) <= MAX_HEADER:
        return []
    escaped = escape_mrkdwn(letter.title)
    if limit is None:
        return [section(f"*{c}*") for c in chunk(escaped, MAX_SECTION - 2)]
    if len(escaped) > limit - 2:
        cut, used = 0, 0
        for char in letter.title:  # cut the raw title so no escape is split
            used += len(escape_mrkdwn(char))
            if used > limit - 3:
                break
            cut += 1
        escaped = escape_mrkdwn(letter.title[:cut]) + "…"
    return [section(f"*{escaped}*")]


def letter_blocks(letter: LetterView, *, with_file: bool) -> list[Block]:
    """The letter post: header, text (or a summary beside the file), counter, buttons.

    Beside a file every part is bounded (title ≤ one section, summary ≤ SUMMARY_CHARS), so that
    layout is always within the limits; the full title and text are in the file.
    """
    blocks: list[Block] = [{"type": "header", "text": plain(letter.title, MAX_HEADER)}]
    blocks.extend(_title_blocks(letter, limit=MAX_SECTION if with_file else None))
    if with_file:
        summary = chunk(escape_mrkdwn(letter.body), SUMMARY_CHARS)[:1] or [" "]
        blocks.append(section(summary[0] + "\n\n…"))
        blocks.append(section(file_note(letter)))
    else:
        blocks.extend(section(c) for c in chunk(escape_mrkdwn(letter.text)))
    if letter.change_note:  # the text changed since it was first posted (DESIGN.md §9)
        blocks.append(section(escape_mrkdwn(letter.change_note)))
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


def letter_file_name(letter: LetterView) -> str:
    """The file with a letter's full text: one per version once the text has changed, so the
    channel's files say which text each is."""
    return f"{letter.slug}.txt" if letter.version <= 1 else f"{letter.slug}-v{letter.version}.txt"


def file_note(letter: LetterView) -> str:
    """What a post beside a file says; after a change, which file holds the current text."""
    if letter.version <= 1:
        return FILE_NOTE
    name = escape_mrkdwn(letter_file_name(letter))
    return f"_The full text of version {letter.version} is in the file {name}._"


def letter_fallback(letter: LetterView) -> str:
    return escape_mrkdwn(f"{letter.title} ({letter.slug}): {counter_line(letter)}")


MAX_STAFF_CHOICES = MAX_BLOCKS - 2  # one section each, a note, and the Cancel button


def confirm_question(title: str, label: str, *, as_staff: bool) -> str:
    if as_staff:
        return f"Sign “{title}” for {label} as their staff?"
    return f"Sign “{title}” as {label}?"


def confirm_blocks(
    slug: str,
    label: str,
    title: str,
    *,
    for_members: Sequence[tuple[str, str]] = (),
    typed_for: str = "",
) -> list[Block]:
    """The confirmation a Sign click opens; the member's name is plain text (no mentions).

    Pressed by staff (`for_members`: (member_id, label) of each member it acts for): one
    question and Confirm button per member, each Confirm carrying `SLUG for MEMBER_ID`.
    Past the block limit the rest are named with how to sign for them by typing (`typed_for`).
    """
    if for_members:
        return _staff_confirm_blocks(slug, title, for_members, typed_for)
    return [
        {
            "type": "section",
            "text": plain(confirm_question(title, label, as_staff=False)[:MAX_SECTION]),
        },
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


def _staff_confirm_blocks(
    slug: str, title: str, for_members: Sequence[tuple[str, str]], typed_for: str
) -> list[Block]:
    blocks: list[Block] = []
    for member_id, label in for_members[:MAX_STAFF_CHOICES]:
        question = confirm_question(title, label, as_staff=True)
        if block_chars(blocks) + len(question) > MAX_BLOCK_CHARS - MAX_SECTION:
            break  # the rest are named in the note (within the combined limit)
        blocks.append(
            {
                "type": "section",
                "block_id": f"confirm:{slug}:{member_id}"[:255],
                "text": plain(question[:MAX_SECTION]),
                "accessory": {
                    "type": "button",
                    "action_id": CONFIRM_ACTION,
                    "style": "primary",
                    "text": plain("Confirm"),
                    "value": f"{slug} for {member_id}",
                },
            }
        )
    rest = for_members[len(blocks) :]
    if rest:
        names = ", ".join(member_id for member_id, _ in rest)
        note = f"Not shown ({len(rest)}): {names}. Type {typed_for} for one of them."
        blocks.append(section(escape_mrkdwn(note)[:MAX_SECTION]))
    blocks.append(
        {
            "type": "actions",
            "block_id": f"confirm:{slug}"[:255],
            "elements": [
                {
                    "type": "button",
                    "action_id": CANCEL_ACTION,
                    "text": plain("Cancel"),
                    "value": slug,
                }
            ],
        }
    )
    return blocks
