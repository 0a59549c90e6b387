"""Replies to Matrix commands: sent at once, in order, from what the command journal recorded.

A command's replies are journaled (``Reply`` objects) in the command's own transaction, and
rendered to Matrix content only here, as they are sent. The sender task sends them as soon as the
command has committed; once an event's replies are out, its journal row is marked answered. A
row that is not (the bot was killed, the homeserver kept failing) is owed: sent again on the next
start (``load_owed``) and by a pass every ``RECOVER_EVERY`` seconds. Every send's transaction id
derives from the command's event id and the reply's index, so a reply re-sent after a crash
between its send and that mark is the event already sent, not a second message.

Rate limits are waited out at the shared gate (bounded); a reply that still cannot go out waits for
the next recovery pass. One the homeserver refuses for good (the bot left the room) is logged and
marked answered: retrying cannot help.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from bot.core import Reply
from bot.db import Database
from bot.models._types import utcnow
from bot.platforms.base import Delivery
from bot.platforms.matrix.content import Rendered
from bot.platforms.matrix.send import Backoff, Sender
from bot.store import matrix_sync
from bot.store.matrix_sync import Answer

log = logging.getLogger(__name__)

#: rate-limit answers one reply may get before it waits for the next recovery pass
MAX_RATE_LIMITED = 12
#: transport failures one reply may get before the same
MAX_TRANSPORT_FAILURES = 8
#: seconds between passes over the answers the journal says are owed
RECOVER_EVERY = 30.0
#: an owed answer younger than this may be in another replica's hands right now
RECOVER_GRACE = timedelta(seconds=30)
#: an answer owed for longer is no longer an answer: it is left unsent
MAX_REPLY_AGE = timedelta(days=7)
#: answered marks written in one transaction at most (a burst shares one write)
MARK_BATCH = 50


def reply_payload(message: Rendered, reply_to: str, thread_root: str | None) -> dict[str, Any]:
    return {"text": message.text, "html": message.html, "reply_to": reply_to, "thread": thread_root}


class ReplyQueue:
    def __init__(
        self,
        database: Database,
        sender: Sender,
        ready: asyncio.Event,
        *,
        reconnect_max: float,
        render: Callable[[Reply], Rendered],
    ) -> None:
        self.database = database
        self.sender = sender
        self.ready = ready
        self.reconnect_max = reconnect_max
        self.render = render
        self.queue: asyncio.Queue[Answer] = asyncio.Queue()
        #: events queued or being sent and not yet marked answered: never queued twice
        self._queued: set[str] = set()
        self._marks: list[str] = []  # sent; the answered mark not written yet

    @property
    def pending(self) -> int:
        return self.queue.qsize()

    # --- the database side (in worker threads) ---------------------------------------------

    def journaled(self, event_id: str) -> Answer | None:
        with self.database.session() as session:
            return matrix_sync.journaled(session, event_id=event_id)

    def _record(self, answer: Answer) -> bool:
        with self.database.session() as session:
            return matrix_sync.record_event(
                session,
                event_id=answer.event_id,
                room_id=answer.room_id,
                thread=answer.thread,
                replies=answer.replies,
            )

    def _owed(self, grace: timedelta) -> list[Answer]:
        now = utcnow()
        with self.database.session() as session:
            return matrix_sync.owed(session, since=now - MAX_REPLY_AGE, before=now - grace)

    def _mark(self, event_ids: list[str]) -> None:
        with self.database.session() as session:
            matrix_sync.mark_answered(session, event_ids=event_ids)

    # --- the event-loop side ---------------------------------------------------------------

    def send(self, answer: Answer) -> None:
        """Queue an answer to be sent now (once: an event already queued is not queued again)."""
        if answer.answered or answer.event_id in self._queued:
            return
        self._queued.add(answer.event_id)
        self.queue.put_nowait(answer)

    async def journal(self, answer: Answer) -> None:
        """Replies the dispatcher did not journal (a refusal rolls back with its command; an
        event the adapter answers itself): send them and journal them, so the event is handled.
        If the journal has the event done already, its stored answer is what is owed."""
        if await asyncio.to_thread(self._record, answer):
            self.send(answer)
            return
        await self.send_journaled(answer.event_id)

    async def send_journaled(self, event_id: str) -> bool:
        """The event is in the journal: send its stored replies if they never went out. False
        when the journal does not have it."""
        stored = await asyncio.to_thread(self.journaled, event_id)
        if stored is None:
            return False
        self.send(stored)
        return True

    async def load_owed(self, grace: timedelta = timedelta(0)) -> int:
        """Answers the journal says are owed (an earlier run crashed, or sending kept failing)."""
        owed = await asyncio.to_thread(self._owed, grace)
        fresh = [answer for answer in owed if answer.event_id not in self._queued]
        for answer in fresh:
            self.send(answer)
        if fresh:
            log.info("matrix: sending %d answer(s) owed from before", len(fresh))
        return len(fresh)

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
        """The sender task: answers in order, each retried (bounded) until sent or left owed;
        now and then, what the journal says is owed is queued again."""
        loop = asyncio.get_running_loop()
        next_recovery = loop.time() + RECOVER_EVERY
        while True:
            if loop.time() >= next_recovery:
                next_recovery = loop.time() + RECOVER_EVERY
                await self._recover()
            try:
                async with asyncio.timeout(max(0.0, next_recovery - loop.time())):
                    answer = await self.queue.get()
            except TimeoutError:
                continue
            try:
                await self.ready.wait()
                if await self._send(answer):
                    self._marks.append(answer.event_id)
                else:
                    self._queued.discard(answer.event_id)  # the next recovery pass retries it
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("matrix: answering %s failed; retried later", answer.event_id)
                self._queued.discard(answer.event_id)
            finally:
                self.queue.task_done()
            if self.queue.empty() or len(self._marks) >= MARK_BATCH:
                await self.flush()

    async def flush(self) -> None:
        """Write the answered marks of what was sent (kept for the next try if that fails)."""
        batch, self._marks = self._marks, []
        if not batch:
            return
        try:
            await asyncio.to_thread(self._mark, batch)
        except Exception:
            log.exception("matrix: could not mark %d answer(s) sent; trying again", len(batch))
            self._marks[:0] = batch
            return
        self._queued.difference_update(batch)

    async def _recover(self) -> None:
        try:
            await self.flush()
            await self.load_owed(RECOVER_GRACE)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("matrix: looking for owed answers failed; trying again later")

    async def _send(self, answer: Answer) -> bool:
        """Every reply of one answer; True when done with it (sent, or refused for good)."""
        if not answer.room_id:
            log.error("matrix: the journal has no room for %s; not answered", answer.event_id)
            return True
        for index, reply in enumerate(answer.replies):
            payload = reply_payload(self.render(reply), answer.event_id, answer.thread)
            key = matrix_sync.reply_key(answer.event_id, index)
            if not await self._send_one(answer.room_id, payload, key):
                return False
        return True

    async def _send_one(self, room_id: str, payload: dict[str, Any], key: str) -> bool:
        limited = transport = 0
        backoff = Backoff(cap=self.reconnect_max)
        while True:
            delivery = await self.deliver(room_id, payload, key)
            if delivery.ok:
                return True
            if delivery.permanent:
                log.warning("matrix: reply %s cannot be sent: %s", key, delivery.error)
                return True
            if delivery.retry_after is not None:
                limited += 1
                if limited <= MAX_RATE_LIMITED:
                    continue  # the gate holds the next try for retry_after
            else:
                transport += 1
                if transport <= MAX_TRANSPORT_FAILURES:
                    await backoff.sleep()
                    continue
            log.warning("matrix: reply %s not sent yet (%s); retried later", key, delivery.error)
            return False

    async def deliver(self, room_id: str, payload: dict[str, Any], key: str) -> Delivery:
        """One attempt (also what the outbox deliverer calls for a reply an older version
        queued in the outbox)."""
        return await self.sender.send_text(
            room_id,
            Rendered(payload["text"], payload["html"]),
            key=key,
            reply_to=payload.get("reply_to"),
            thread_root=payload.get("thread"),
            filename="reply.txt",
        )
