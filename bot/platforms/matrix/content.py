"""Matrix event content, both ways, as pure functions (no I/O): easy to test, hard to get wrong.

Incoming: the command text of an ``m.room.message`` (reply fallbacks stripped, mention pills turned
back into user ids), its thread/reply relation, and whether it is an edit.
Outgoing: ``m.notice`` (command replies) or ``m.text`` (posts, reminders, summaries: notices never
notify) content with a plain ``body`` and a sanitised HTML ``formatted_body``, always
``"m.mentions": {}``; edits (``m.replace``) with the full ``m.new_content``; ``m.file``; and the
size check that keeps every event under the 64 KiB limit, measured as the event is sent.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import urllib.parse
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import nh3

from bot.core import Reply
from bot.platforms.base import render_reply
from bot.templating import render

HTML_FORMAT = "org.matrix.custom.html"
#: command replies: bots answer with notices (the default push rules never notify them)
MSGTYPE_NOTICE = "m.notice"
#: letter posts, reminders, summaries: as notices '.m.rule.suppress_notices' would mute them
MSGTYPE_TEXT = "m.text"

#: Synapse refuses a PDU whose canonical JSON (UTF-8, not ASCII-escaped) exceeds 65,536 bytes
#: (``M_TOO_LARGE``), counting what it adds around the content: room_id and sender (up to 255
#: bytes each), type, origin_server_ts, depth, up to 10 prev_events and about 5 auth_events
#: (46 bytes each), hashes, the server's signature (with its name) and unsigned. That is about
#: 1.7 KB at worst; 5.5 KB are kept back, the rest being a safety margin.
MAX_EVENT_BYTES = 65_536
MAX_CONTENT_BYTES = 60_000
MEGOLM_ALGORITHM = "m.megolm.v1.aes-sha2"
#: Lengths of the envelope's fixed fields: curve25519 key and megolm session id, unpadded base64.
_KEY_CHARS = 43
#: Used when the room or device is not known: the longest ids the spec allows.
_LONGEST_ID = 255
#: Tags our templates produce (and a few harmless ones), per the Matrix spec's recommended list.
# `del`: removed words in a diff (DESIGN.md §9); on the spec's list of HTML tags clients render.
_ALLOWED_TAGS = {
    "b", "strong", "i", "em", "del", "code", "pre", "br", "p", "blockquote", "ul", "ol", "li"
}  # fmt: skip
_MATRIX_TO = re.compile(r"^https://matrix\.to/#/(@[^/?#]+)")
#: ``matrix:u/alice:example.org`` (MSC2312 URIs), with optional ``?action=…``
_MATRIX_URI = re.compile(r"^matrix:(?://[^/]*/)?u/([^/?#]+)")
#: a user id as a path or fragment segment of any permalink: ``https://x/#/@alice:example.org``
_USER_SEGMENT = re.compile(r"(?:^|[/#=])(@[^/?#&\s]+)")


@dataclass(frozen=True)
class Rendered:
    """A message in both forms Matrix carries: plain text and sanitised HTML."""

    text: str
    html: str


def txn_id(*parts: str) -> str:
    """A transaction id derived from stable parts: a retried send is the same event to Synapse."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return f"cosign.{digest[:40]}"


def sanitise_html(html_text: str) -> str:
    return nh3.clean(html_text, tags=_ALLOWED_TAGS, attributes={}, link_rel=None)


def html_lines(html_text: str) -> str:
    """Rendered HTML (values already escaped) with newlines made visible, then sanitised."""
    return sanitise_html(html_text.strip("\n").replace("\n", "<br>"))


def render_pair(template: str, **context: Any) -> Rendered:
    text = render(template, "text", **context).strip("\n")
    return Rendered(text, html_lines(render(template, "html", **context)))


def reply_pair(reply: Reply) -> Rendered:
    return Rendered(render_reply(reply, "text"), html_lines(render_reply(reply, "html")))


def relation(reply_to: str | None, thread_root: str | None) -> dict[str, Any] | None:
    """A reply to the command, inside its thread when it was in one."""
    if thread_root:
        rel: dict[str, Any] = {
            "rel_type": "m.thread",
            "event_id": thread_root,
            "is_falling_back": False,
        }
        if reply_to:
            rel["m.in_reply_to"] = {"event_id": reply_to}
        return rel
    if reply_to:
        return {"m.in_reply_to": {"event_id": reply_to}}
    return None


def notice(
    message: Rendered,
    *,
    reply_to: str | None = None,
    thread_root: str | None = None,
    msgtype: str = MSGTYPE_NOTICE,
) -> dict[str, Any]:
    """A message (``m.notice`` unless told otherwise) in both forms, mentioning no one."""
    content: dict[str, Any] = {
        "msgtype": msgtype,
        "body": message.text,
        "format": HTML_FORMAT,
        "formatted_body": message.html,
        "m.mentions": {},
    }
    rel = relation(reply_to, thread_root)
    if rel is not None:
        content["m.relates_to"] = rel
    return content


def edit(original_event_id: str, new_content: dict[str, Any]) -> dict[str, Any]:
    """An ``m.replace`` edit carrying the full new content (body and formatted_body).

    The outer body (for clients without edit support) is the first line only, so an edit is
    barely larger than the content it replaces.
    """
    replacement = {k: v for k, v in new_content.items() if k != "m.relates_to"}
    content = {
        "msgtype": replacement.get("msgtype", MSGTYPE_NOTICE),
        "body": "* " + str(replacement.get("body", "")).split("\n", 1)[0],
        "m.new_content": replacement,
        "m.relates_to": {"rel_type": "m.replace", "event_id": original_event_id},
        "m.mentions": {},
    }
    if "formatted_body" in replacement:
        content["format"] = HTML_FORMAT
        content["formatted_body"] = "* " + str(replacement["formatted_body"]).split("<br>", 1)[0]
    return content


def file_message(
    *,
    filename: str,
    mimetype: str,
    size: int,
    content_uri: str,
    encryption: dict[str, Any] | None,
    reply_to: str | None = None,
    thread_root: str | None = None,
) -> dict[str, Any]:
    content: dict[str, Any] = {
        "msgtype": "m.file",
        "body": filename,
        "filename": filename,
        "info": {"mimetype": mimetype, "size": size},
        "m.mentions": {},
    }
    if encryption is not None:
        content["file"] = {**encryption, "url": content_uri}
    else:
        content["url"] = content_uri
    rel = relation(reply_to, thread_root)
    if rel is not None:
        content["m.relates_to"] = rel
    return content


def content_bytes(content: dict[str, Any]) -> int:
    """Bytes of content as Synapse measures it: canonical JSON, UTF-8, nothing escaped."""
    return len(json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def megolm_plaintext(content: dict[str, Any], room_id: str, event_type: str) -> str:
    """The JSON nio encrypts (``OlmMachine.group_encrypt``: ``Api.to_json``, which keeps
    ``json.dumps``'s ``ensure_ascii``): each non-ASCII character becomes ``\\uXXXX`` (6 bytes; 12
    for one outside the BMP), so Cyrillic, Greek or CJK text grows three- to sixfold."""
    return json.dumps(
        {"content": content, "type": event_type, "room_id": room_id}, separators=(",", ":")
    )


def _varint_bytes(value: int) -> int:
    return max(1, math.ceil(value.bit_length() / 7))


def megolm_ciphertext_chars(plaintext_bytes: int) -> int:
    """Length of the base64 ciphertext vodozemac makes of a plaintext of this many bytes.

    A megolm message is a version byte; protobuf fields for the message index (tag + varint,
    counted at its 5-byte maximum) and the AES-256-CBC ciphertext (tag + varint length + the
    plaintext PKCS#7-padded to a multiple of 16); an 8-byte MAC; a 64-byte Ed25519 signature.
    It travels as unpadded base64: 4/3 of that.
    """
    aes = (plaintext_bytes // 16 + 1) * 16
    raw = 1 + (1 + 5) + (1 + _varint_bytes(aes) + aes) + 8 + 64
    return math.ceil(raw * 4 / 3)


def encrypted_envelope(
    content: dict[str, Any], *, room_id: str, device_id: str, event_type: str = "m.room.message"
) -> dict[str, Any]:
    """The ``m.room.encrypted`` content nio sends for ``content`` (``AsyncClient.encrypt``), with
    stand-ins of the right length for the key, session id and ciphertext."""
    plaintext = megolm_plaintext(content, room_id, event_type).encode("utf-8")
    envelope: dict[str, Any] = {
        "algorithm": MEGOLM_ALGORITHM,
        "sender_key": "k" * _KEY_CHARS,
        "ciphertext": "c" * megolm_ciphertext_chars(len(plaintext)),
        "session_id": "s" * _KEY_CHARS,
        "device_id": device_id,
    }
    if "m.relates_to" in content:  # nio copies the relation out, in the clear
        envelope["m.relates_to"] = content["m.relates_to"]
    return envelope


def sent_bytes(
    content: dict[str, Any],
    *,
    encrypted: bool,
    room_id: str | None = None,
    device_id: str | None = None,
) -> int:
    """Bytes the event's content takes on the homeserver: as given in a plain room, the megolm
    envelope in an encrypted one. Unknown ids count at their longest."""
    if not encrypted:
        return content_bytes(content)
    envelope = encrypted_envelope(
        content,
        room_id=room_id or "!" + "r" * (_LONGEST_ID - 1),
        device_id=device_id or "D" * _LONGEST_ID,
    )
    return content_bytes(envelope)


def fits(
    content: dict[str, Any],
    *,
    encrypted: bool,
    room_id: str | None = None,
    device_id: str | None = None,
) -> bool:
    """Whether the event, as sent, stays under the limit with the PDU's fields and a margin."""
    return (
        sent_bytes(content, encrypted=encrypted, room_id=room_id, device_id=device_id)
        <= MAX_CONTENT_BYTES
    )


def preview(text: str, limit: int = 1500) -> str:
    """The start of a long text, cut at a line break, for the notice that announces a file."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[: cut if cut > limit // 2 else limit].rstrip()


# --- incoming -------------------------------------------------------------------------------


def is_edit(content: dict[str, Any]) -> bool:
    rel = content.get("m.relates_to")
    return (isinstance(rel, dict) and rel.get("rel_type") == "m.replace") or (
        "m.new_content" in content
    )


def thread_and_reply(content: dict[str, Any]) -> tuple[str | None, str | None]:
    """(thread root, replied-to event) of a message; either may be None."""
    rel = content.get("m.relates_to")
    if not isinstance(rel, dict):
        return None, None
    in_reply = rel.get("m.in_reply_to")
    reply_to = in_reply.get("event_id") if isinstance(in_reply, dict) else None
    reply_to = reply_to if isinstance(reply_to, str) else None
    if rel.get("rel_type") == "m.thread" and isinstance(rel.get("event_id"), str):
        falling_back = bool(rel.get("is_falling_back", False))
        return rel["event_id"], (None if falling_back else reply_to)
    return None, reply_to


def strip_reply_fallback(body: str) -> str:
    """Drop the quoted '> …' lines a reply starts with (and the blank line after them)."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith(">"):
        return body
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index < len(lines) and not lines[index].strip():
        index += 1
    return "\n".join(lines[index:])


def pill_user(href: str, mentioned: frozenset[str] = frozenset()) -> str | None:
    """The user a link points at, if it is a mention pill.

    A user listed in the event's ``m.mentions.user_ids`` is looked for first, in any link form
    (clients use other permalink prefixes than matrix.to); failing that, a matrix.to link or a
    ``matrix:u/`` URI, which name a user whatever ``m.mentions`` says.
    """
    href = urllib.parse.unquote(href.strip())
    found: list[str] = []
    uri = _MATRIX_URI.match(href)
    if uri:
        found.append("@" + uri.group(1))
    found.extend(_USER_SEGMENT.findall(href))
    for user in found:
        if user in mentioned:
            return user
    to = _MATRIX_TO.match(href)
    if to:
        return to.group(1)
    return "@" + uri.group(1) if uri else None


class _CommandHTML(HTMLParser):
    """Text of a formatted_body: <mx-reply> dropped, user pills turned into their user ids."""

    def __init__(self, mentioned: frozenset[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.mentioned = mentioned
        self.parts: list[str] = []
        self._skip = 0
        self._pill_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "mx-reply":
            self._skip += 1
        elif self._skip:
            return
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "a" and not self._pill_depth:
            user = pill_user(dict(attrs).get("href") or "", self.mentioned)
            if user:
                self.parts.append(user)
                self._pill_depth = 1
        elif tag == "a":
            self._pill_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "mx-reply":
            self._skip = max(0, self._skip - 1)
        elif self._skip:
            return
        elif tag == "a" and self._pill_depth:
            self._pill_depth -= 1
        elif tag == "p":
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip and not self._pill_depth:
            self.parts.append(data)


def mentioned_users(content: dict[str, Any]) -> frozenset[str]:
    """``m.mentions.user_ids`` of an event (intentional mentions), ignoring malformed entries."""
    mentions = content.get("m.mentions")
    users = mentions.get("user_ids") if isinstance(mentions, dict) else None
    if not isinstance(users, list):
        return frozenset()
    return frozenset(u for u in users if isinstance(u, str) and u.startswith("@"))


def command_text(content: dict[str, Any]) -> str:
    """The text to parse as a command: fallbacks stripped; mention pills become user ids."""
    body = content.get("body")
    text = strip_reply_fallback(body) if isinstance(body, str) else ""
    formatted = content.get("formatted_body")
    mentioned = mentioned_users(content)
    if (
        content.get("format") == HTML_FORMAT
        and isinstance(formatted, str)
        and (mentioned or "https://matrix.to/#/" in formatted or "matrix:" in formatted)
    ):
        parser = _CommandHTML(mentioned)
        parser.feed(formatted)
        parser.close()
        text = "".join(parser.parts)
    return text.strip()
