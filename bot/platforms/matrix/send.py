"""Sending to Matrix: one place that maps nio's answers onto ``Delivery`` values.

* ``M_LIMIT_EXCEEDED`` closes a shared gate for ``retry_after_ms``; every later send waits at the
  gate instead of hammering the homeserver (nio's own 429 retries are switched off, so the waits
  are ours and bounded by our callers).
* ``M_FORBIDDEN``/``M_NOT_FOUND``/a room nio does not know → permanent: retrying will not help.
* Transport errors (the homeserver went away) and encryption not ready yet (nio's
  ``SendRetryError``, ``MembersSyncError``, ``GroupEncryptionError``, ``OlmTrustError``: the
  first two subclass ``LocalProtocolError``, so they are caught before it) → retryable.
* Every send that might be retried carries a transaction id derived from a stable key: Synapse
  answers a repeated transaction with the original event, so a retry after a crash is not a
  duplicate message.
* Content that would exceed the event size limit *as sent* (in an encrypted room: the megolm
  envelope of the ASCII-escaped JSON nio encrypts) goes out as a short message plus an ``m.file``.
"""

from __future__ import annotations

import asyncio
import html
import io
import logging
import random
import time
from typing import Any

from aiohttp import ClientError
from nio import (
    AsyncClient,
    LocalProtocolError,
    RoomSendResponse,
    UploadResponse,
)
from nio.exceptions import (
    EncryptionError,
    GroupEncryptionError,
    MembersSyncError,
    OlmTrustError,
    SendRetryError,
)

from bot.platforms.base import Delivery
from bot.platforms.matrix.content import (
    MSGTYPE_NOTICE,
    Rendered,
    file_message,
    fits,
    html_lines,
    notice,
    preview,
    txn_id,
)

log = logging.getLogger(__name__)

_PERMANENT = {"M_FORBIDDEN", "M_NOT_FOUND", "M_TOO_LARGE", "M_BAD_JSON", "M_NOT_JSON"}
#: nio could not encrypt yet (members or keys not synced, group session not shared): retryable.
#: ``SendRetryError`` and ``MembersSyncError`` subclass ``LocalProtocolError``: catch these first.
ENCRYPTION_NOT_READY: tuple[type[BaseException], ...] = (
    SendRetryError,
    MembersSyncError,
    GroupEncryptionError,
    EncryptionError,
    OlmTrustError,
)
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    ClientError,
    TimeoutError,
    asyncio.TimeoutError,
    ConnectionError,
    OSError,
)


class RateGate:
    """'Not before' time shared by every send: a rate limit seen once holds all senders."""

    def __init__(self) -> None:
        self._until = 0.0
        self.times_limited = 0  # how often the homeserver said M_LIMIT_EXCEEDED (for the logs)

    def block(self, seconds: float) -> None:
        self.times_limited += 1
        self._until = max(self._until, time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self._until - time.monotonic())

    async def wait(self) -> None:
        while (left := self.remaining()) > 0:  # noqa: ASYNC110 - a deadline, not an event
            await asyncio.sleep(left)


class Backoff:
    """Exponential back-off with jitter, capped; reset after a success."""

    def __init__(self, initial: float = 0.5, cap: float = 30.0) -> None:
        self.initial = initial
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * (2 ** min(self.failures, 20)))
        self.failures += 1
        return delay * random.uniform(0.75, 1.0)

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        self.failures = 0


def failure_of(response: Any, gate: RateGate) -> Delivery:
    """A nio error response as a Delivery (closing the gate on a rate limit)."""
    code = str(getattr(response, "status_code", "") or "")
    status = getattr(getattr(response, "transport_response", None), "status", None)
    if code == "M_LIMIT_EXCEEDED" or status == 429:
        retry_ms = getattr(response, "retry_after_ms", None) or 5000
        seconds = max(0.05, retry_ms / 1000)
        gate.block(seconds)
        return Delivery.failed(f"M_LIMIT_EXCEEDED (retry after {retry_ms} ms)", retry_after=seconds)
    message = str(getattr(response, "message", "") or response)
    if code in _PERMANENT or status in (403, 404, 413):
        return Delivery.failed(f"{code or status}: {message}", permanent=True)
    return Delivery.failed(f"{code or status or 'error'}: {message}")


class Sender:
    """Sends events through one nio client, honouring rate limits and the size limit."""

    def __init__(self, client: AsyncClient, *, encryption: bool) -> None:
        self.client = client
        self.encryption = encryption
        self.gate = RateGate()

    def is_encrypted(self, room_id: str) -> bool:
        room = self.client.rooms.get(room_id)
        if room is None:
            return self.encryption  # unknown yet: assume the smaller size limit
        return bool(room.encrypted)

    def fits(self, room_id: str, content: dict[str, Any]) -> bool:
        """Whether ``content`` sent to this room (encrypted there or not) is under the limit."""
        return fits(
            content,
            encrypted=self.is_encrypted(room_id),
            room_id=room_id,
            device_id=self.client.device_id or None,
        )

    async def room_send(
        self, room_id: str, content: dict[str, Any], tx: str | None = None
    ) -> Delivery:
        await self.gate.wait()
        try:
            response = await self.client.room_send(
                room_id,
                "m.room.message",
                content,
                tx_id=tx,
                ignore_unverified_devices=True,
            )
        except ENCRYPTION_NOT_READY as exc:
            return Delivery.failed(f"encryption not ready: {exc.__class__.__name__}: {exc}")
        except LocalProtocolError as exc:  # nio does not know the room: not joined
            return Delivery.failed(f"not in room {room_id}: {exc}", permanent=True)
        except TRANSPORT_ERRORS as exc:
            return Delivery.failed(f"homeserver unreachable: {exc.__class__.__name__}: {exc}")
        if isinstance(response, RoomSendResponse):
            return Delivery.sent(event_id=response.event_id)
        return failure_of(response, self.gate)

    async def send_file(
        self,
        room_id: str,
        *,
        filename: str,
        data: bytes,
        mimetype: str,
        tx: str | None,
        reply_to: str | None = None,
        thread_root: str | None = None,
    ) -> Delivery:
        encrypted = self.is_encrypted(room_id)
        await self.gate.wait()
        try:
            response, keys = await self.client.upload(
                io.BytesIO(data),
                content_type=mimetype,
                filename=filename,
                encrypt=encrypted,
                filesize=len(data),
            )
        except TRANSPORT_ERRORS as exc:
            return Delivery.failed(f"upload failed: {exc.__class__.__name__}: {exc}")
        if not isinstance(response, UploadResponse):
            return failure_of(response, self.gate)
        content = file_message(
            filename=filename,
            mimetype=mimetype,
            size=len(data),
            content_uri=response.content_uri,
            encryption=keys if encrypted else None,
            reply_to=reply_to,
            thread_root=thread_root,
        )
        return await self.room_send(room_id, content, tx)

    async def send_text(
        self,
        room_id: str,
        message: Rendered,
        *,
        key: str,
        reply_to: str | None = None,
        thread_root: str | None = None,
        filename: str = "message.txt",
        msgtype: str = MSGTYPE_NOTICE,
        keep_ending: bool = False,
    ) -> Delivery:
        """One message; if too large for an event, its beginning plus the text as a file.

        With ``keep_ending`` the preview also ends as the message does (its last paragraph, when
        short): a direct message ends with what to do (``!sign SLUG`` to re-confirm a changed
        text), which the reader must see without opening the file.
        """
        content = notice(message, reply_to=reply_to, thread_root=thread_root, msgtype=msgtype)
        if self.fits(room_id, content):
            return await self.room_send(room_id, content, txn_id(key))
        ending = last_paragraph(message.text) if keep_ending else ""
        limit = 1500
        while True:  # 1,500 characters fit in any script; shrink if the relation is huge
            shown = preview(message.text, limit)
            short_text = (
                shown
                + f"\n\n… too long for one message: the full text is attached as {filename}."
                + (f"\n\n{ending}" if ending and not shown.endswith(ending) else "")
            )
            short = Rendered(short_text, html_lines(html.escape(short_text, quote=False)))
            short_content = notice(
                short, reply_to=reply_to, thread_root=thread_root, msgtype=msgtype
            )
            if limit <= 100 or self.fits(room_id, short_content):
                break
            limit //= 2
        first = await self.room_send(room_id, short_content, txn_id(key, "preview"))
        if not first.ok:
            return first
        attached = await self.send_file(
            room_id,
            filename=filename,
            data=message.text.encode("utf-8"),
            mimetype="text/plain; charset=utf-8",
            tx=txn_id(key, "file"),
            reply_to=reply_to,
            thread_root=thread_root,
        )
        if not attached.ok:
            return attached
        return Delivery.sent(
            event_id=first.result.get("event_id"), file_event_id=attached.result.get("event_id")
        )


#: The longest last paragraph a preview repeats (``keep_ending``): an instruction, not a text.
ENDING_CHARS = 500


def last_paragraph(text: str) -> str:
    """The text's last paragraph if it is short and not its only one, else ``""``."""
    head, sep, last = text.rstrip().rpartition("\n\n")
    last = last.strip()
    return last if sep and head.strip() and 0 < len(last) <= ENDING_CHARS else ""
