"""Replies to Matrix commands: sent at once, in order, and made durable meanwhile.

``commit`` hands the rendered replies to the sender task and, while they go out, marks the
command's event handled and stores the replies (outbox rows of kind ``matrix_reply``, held back
from the outbox deliverer) in one transaction; the sync loop waits for that commit before it moves
its checkpoint. Every send's transaction id derives from the reply's key, so a command re-handled
after a crash between its send and that commit gets the event already sent, not a second message.

Rate limits are waited out at the shared gate (bounded); a reply that still cannot go out is
handed to the outbox deliverer's slower retries, and replies left over by a crash are sent first on
the next start.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.db import Database
from bot.models import OutboxMessage
from bot.models._types import utcnow
from bot.platforms.base import Delivery
from bot.platforms.matrix.content import Rendered
from bot.platforms.matrix.send import Backoff, Sender
from bot.store import matrix_sync, outbox

log = logging.getLogger(__name__)

#: queued replies wait this long before the outbox deliverer may take them over from the sender
REPLY_HOLD = timedelta(minutes=10)
MARK_LEASE = timedelta(seconds=30)  # to record a reply's outcome under our own claim
#: rate-limit answers one reply may get before it is handed to the outbox's slower retries
MAX_RATE_LIMITED = 12
#: transport failures one reply may get before the same hand-over
MAX_TRANSPORT_FAILURES = 8


@dataclass(frozen=True)
class QueuedReply:
    key: str
    room_id: str
    payload: dict[str, Any]
    outbox_id: asyncio.Future[int | None]  # known once the commit is done (None: nothing stored)


def reply_payload(message: Rendered, reply_to: str, thread_root: str | None) -> dict[str, Any]:
    return {"text": message.text, "html": message.html, "reply_to": reply_to, "thread": thread_root}


def _stored(row: OutboxMessage) -> QueuedReply:
    future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
    future.set_result(row.id)
    return QueuedReply(row.idempotency_key, row.channel, dict(row.payload), future)


class ReplyQueue:
    def __init__(
        self, database: Database, sender: Sender, ready: asyncio.Event, *, reconnect_max: float
    ) -> None:
        self.database = database
        self.sender = sender
        self.ready = ready
        self.reconnect_max = reconnect_max
        self.queue: asyncio.Queue[QueuedReply] = asyncio.Queue()

    @property
    def pending(self) -> int:
        return self.queue.qsize()

    # --- the database side (in worker threads) ---------------------------------------------

    def was_handled(self, event_id: str) -> bool:
        with self.database.session() as session:
            return matrix_sync.was_handled(session, event_id=event_id)

    def _record(
        self, event_id: str, room_id: str, payloads: list[dict[str, Any]]
    ) -> dict[str, int]:
        with self.database.session() as session:
            rows = matrix_sync.record_command(
                session,
                event_id=event_id,
                room_id=room_id,
                replies=payloads,
                hold_until=utcnow() + REPLY_HOLD,
            )
            return {row.idempotency_key: row.id for row in rows or [] if row.id is not None}

    def _leftovers(self) -> list[OutboxMessage]:
        with self.database.session() as session:
            return matrix_sync.pending_replies(session, hold_until=utcnow() + REPLY_HOLD)

    def _mark(self, outbox_id: int, delivery: Delivery) -> None:
        """Record the outcome under a claim of our own: if the outbox deliverer took the row
        over meanwhile (its hold ran out), its outcome stands (the send is idempotent anyway)."""
        now = utcnow()
        with self.database.session() as session:
            token = outbox.claim(session, message_id=outbox_id, now=now, lease=MARK_LEASE)
            if token is None:
                return
            if delivery.ok:
                outbox.mark_delivered(
                    session, message_id=outbox_id, token=token, at=now, result=delivery.result
                )
                return
            wait = delivery.retry_after if delivery.retry_after is not None else 5.0
            outbox.mark_retry(
                session,
                message_id=outbox_id,
                token=token,
                error=delivery.error,
                next_attempt_at=now + timedelta(seconds=wait),
                give_up=delivery.permanent,
            )

    # --- the event-loop side ---------------------------------------------------------------

    async def commit(self, event_id: str, room_id: str, payloads: list[dict[str, Any]]) -> None:
        """The command is handled: its replies start going out, and the handled mark and the
        replies are committed (one transaction) before this returns."""
        loop = asyncio.get_running_loop()
        items = [
            QueuedReply(matrix_sync.reply_key(event_id, i), room_id, p, loop.create_future())
            for i, p in enumerate(payloads)
        ]
        for item in items:
            self.queue.put_nowait(item)
        stored: dict[str, int] = {}
        try:
            stored = await asyncio.to_thread(self._record, event_id, room_id, payloads)
        finally:
            for item in items:
                item.outbox_id.set_result(stored.get(item.key))

    async def load_leftovers(self) -> None:
        """Replies an earlier run stored but never sent (it crashed): they go out first."""
        for row in await asyncio.to_thread(self._leftovers):
            self.queue.put_nowait(_stored(row))

    async def let_out(self, timeout: float) -> None:
        """Wait (briefly) for the queued replies to go out, unless the homeserver rate-limits us.

        The sync loop calls this before its next long poll, so the homeserver serves the reply
        before that /sync, as with a callback-based bot: lower latency on a busy homeserver.
        """
        if self.queue.empty() or self.sender.gate.remaining() > 0:
            return
        try:
            await asyncio.wait_for(self.queue.join(), timeout=timeout)
        except TimeoutError:
            pass

    async def run(self) -> None:
        """The sender task: replies in order, each retried (bounded) until sent or handed over."""
        while True:
            item = await self.queue.get()
            try:
                await self.ready.wait()
                await self._send(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("matrix: sending reply %s failed; the outbox will retry", item.key)
            finally:
                self.queue.task_done()

    async def _send(self, item: QueuedReply) -> None:
        limited = transport = 0
        backoff = Backoff(cap=self.reconnect_max)
        while True:
            delivery = await self.deliver(item.room_id, item.payload, item.key)
            if delivery.ok or delivery.permanent:
                if delivery.permanent:
                    log.warning("matrix: reply %s cannot be sent: %s", item.key, delivery.error)
                break
            if delivery.retry_after is not None:
                limited += 1
                if limited <= MAX_RATE_LIMITED:
                    continue  # the gate holds the next try for retry_after
            else:
                transport += 1
                if transport <= MAX_TRANSPORT_FAILURES:
                    await backoff.sleep()
                    continue
            log.warning("matrix: reply %s handed to the outbox (%s)", item.key, delivery.error)
            break
        outbox_id = await item.outbox_id
        if outbox_id is not None:
            await asyncio.to_thread(self._mark, outbox_id, delivery)

    async def deliver(self, room_id: str, payload: dict[str, Any], key: str) -> Delivery:
        """One attempt (also what the outbox deliverer calls for a handed-over reply)."""
        return await self.sender.send_text(
            room_id,
            Rendered(payload["text"], payload["html"]),
            key=key,
            reply_to=payload.get("reply_to"),
            thread_root=payload.get("thread"),
            filename="reply.txt",
        )
