"""Matrix event content, both ways, as pure functions (no I/O): easy to test, hard to get wrong.

Incoming: the command text of an ``m.room.message`` (reply fallbacks stripped, mention pills turned
back into user ids), its thread/reply relation, and whether it is an edit.
Outgoing: ``m.notice`` content with a plain ``body`` and a sanitised HTML ``formatted_body``,
always ``"m.mentions": {}``; edits (``m.replace``) with the full ``m.new_content``; ``m.file``;
and the size check that keeps every event under the 64 KiB limit.
"""

from __future__ import annotations

import hashlib
import json
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
#: Synapse refuses events over 65,536 bytes (the whole event, signatures and all): stay well below.
MAX_CONTENT_BYTES = 60_000
#: Megolm ciphertext is base64 (4/3 of the plaintext) inside a JSON envelope.
MAX_ENCRYPTED_CONTENT_BYTES = 42_000
#: Tags our templates produce (and a few harmless ones), per the Matrix spec's recommended list.
_ALLOWED_TAGS = {"b", "strong", "i", "em", "code", "pre", "br", "p", "blockquote", "ul", "ol", "li"}
_MATRIX_TO = re.compile(r"^https://matrix\.to/#/(@[^/?#]+)")


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
    message: Rendered, *, reply_to: str | None = None, thread_root: str | None = None
) -> dict[str, Any]:
    content: dict[str, Any] = {
        "msgtype": "m.notice",
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
        "msgtype": replacement.get("msgtype", "m.notice"),
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
    return len(json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def fits(content: dict[str, Any], *, encrypted: bool) -> bool:
    limit = MAX_ENCRYPTED_CONTENT_BYTES if encrypted else MAX_CONTENT_BYTES
    return content_bytes(content) <= limit


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


class _CommandHTML(HTMLParser):
    """Text of a formatted_body: <mx-reply> dropped, user pills turned into their user ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
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
            href = urllib.parse.unquote(dict(attrs).get("href") or "")
            match = _MATRIX_TO.match(href)
            if match:
                self.parts.append(match.group(1))
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


def command_text(content: dict[str, Any]) -> str:
    """The text to parse as a command: fallbacks stripped; mention pills become user ids."""
    body = content.get("body")
    text = strip_reply_fallback(body) if isinstance(body, str) else ""
    formatted = content.get("formatted_body")
    if (
        content.get("format") == HTML_FORMAT
        and isinstance(formatted, str)
        and "https://matrix.to/#/" in formatted
    ):
        parser = _CommandHTML()
        parser.feed(formatted)
        parser.close()
        text = "".join(parser.parts)
    return text.strip()
