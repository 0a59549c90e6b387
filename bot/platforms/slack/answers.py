"""Answers owed to Slack users: an acknowledged command is never dropped (DESIGN.md rule 12).

A command normally commits within `[slack].answer_within` and its answer travels in the
acknowledgement itself (a slash command) or right after it. Every command is journaled under its
Slack id (trigger_id, or the event_id of a mention) in its own transaction, with its replies
(bot.store.events). When a command runs longer, the invocation is written to the journal *before*
Slack gets the acknowledgement. What a killed bot left - commands acknowledged and never run,
answers committed and never sent - is found by `recover`, which runs on start and then every
RECOVER_EVERY seconds, and answered through the response_url (valid 30 minutes) or as an
ephemeral message. A bot killed after sending an answer but before recording that it did sends
that answer once more after its restart; nothing is answered twice otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bot.core import Invocation, Reply
from bot.models._types import utcnow
from bot.store import events

if TYPE_CHECKING:
    from bot.runtime import Bot

log = logging.getLogger(__name__)

PLATFORM = "slack"
RECOVER_EVERY = 15.0  # seconds between passes over what is owed
# An owed row younger than this may belong to a command another replica is running right now.
OWED_GRACE = timedelta(seconds=10)
RESPONSE_URL_LIFETIME = timedelta(minutes=30)  # Slack: response_url works for 30 minutes
FLUSH_EVERY = 1.0  # seconds: answered marks that failed to write are tried again

Deliver = Callable[[list[Reply], Invocation | None, dict[str, Any]], Awaitable[None]]


class AnswerBook:
    """The journal's Slack side: keep before acking, mark answered, recover what is owed."""

    def __init__(self, bot: Bot, deliver: Deliver) -> None:
        self.bot = bot
        self.deliver = deliver
        self._answered: list[str] = []  # answered, but the mark failed: retried
        self._marking_next: list[str] = []  # answered, to be marked by the marker task
        self._marker: asyncio.Future[None] | None = None
        # Its own thread: in the shared pool the marks waited behind every request's `keep`
        self._mark_thread = ThreadPoolExecutor(1, thread_name_prefix="slack-answered")
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    # --- the live path ---------------------------------------------------------------------

    async def keep(self, invocation: Invocation) -> bool:
        """Journal a command that has not committed yet, before it is acknowledged."""
        assert invocation.reply_to is not None
        try:
            return await asyncio.to_thread(self._keep, invocation)
        except Exception:  # noqa: BLE001 - the ack must go out anyway; the answer still follows
            log.exception("slack: could not journal %s before its ack", invocation.event_id)
            return False

    def _keep(self, invocation: Invocation) -> bool:
        assert invocation.reply_to is not None
        with self.bot.database.session() as session:
            return events.receive(
                session,
                platform=PLATFORM,
                event_id=invocation.event_id,
                invocation=invocation,
                reply_to=invocation.reply_to,
            )

    async def answered(self, event_id: str) -> None:
        """The answer to this event went out: record it at once (a bot killed between the two
        sends that answer once more after its restart, so the window is kept short).

        Marks are written by one task, all those waiting in one transaction: one transaction
        per answer queued behind each other in the thread pool under a burst, and the answers
        sent but not yet marked grew into the hundreds (tests/test_crash.py)."""
        if not event_id:
            return
        self._marking_next.append(event_id)
        if self._marker is None or self._marker.done():
            self._marker = asyncio.ensure_future(self._mark_waiting())

    async def _mark_waiting(self) -> None:
        while self._marking_next:
            batch, self._marking_next = self._marking_next, []
            try:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._mark_thread, self._mark, batch)
            except Exception:  # noqa: BLE001 - the next bookkeeping pass writes them
                log.exception("slack: could not record that %d answers went out", len(batch))
                self._answered.extend(batch)

    def spawn(self, work: Awaitable[None]) -> None:
        """Work that follows an acknowledgement (the listener returns, so the ack is sent)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- background ------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._run(), name="slack-answers")

    async def stop(self) -> None:
        """Let answers in flight go out, then write the last answered marks."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        if self._marker is not None:
            await asyncio.wait({self._marker}, timeout=10)
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
            self._loop_task = None
        await self._flush()
        self._mark_thread.shutdown(wait=False)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_recovery = loop.time()  # at once: what the previous run of the bot left
        while True:
            try:
                if loop.time() >= next_recovery:
                    await self.recover()
                    next_recovery = loop.time() + RECOVER_EVERY
                await asyncio.sleep(FLUSH_EVERY)
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - logged; the loop carries on
                log.exception("slack: answer bookkeeping failed; carrying on")
                await asyncio.sleep(1)

    async def _flush(self) -> None:
        batch, self._answered = self._answered, []
        if not batch:
            return
        try:
            await asyncio.to_thread(self._mark, batch)
        except Exception:
            self._answered[:0] = batch  # tried again with the next batch
            raise

    def _mark(self, event_ids: list[str]) -> None:
        with self.bot.database.session() as session:
            events.mark_answered(session, platform=PLATFORM, event_ids=event_ids)

    async def recover(self) -> int:
        """Answer what the journal says is owed; the number of events answered."""
        now = utcnow()
        rows = await asyncio.to_thread(self._owed, now)
        answered = 0
        for event_id, state, invocation, replies, reply_to in rows:
            try:
                if state == events.RECEIVED and invocation is not None:
                    log.info("slack: running %s, acknowledged before a restart", event_id)
                    replies = await self.bot.handle(invocation)
                    if not replies:  # another process ran it meanwhile: send what it kept
                        replies = await asyncio.to_thread(self._stored, event_id)
                await self.deliver(replies, invocation, reply_to)
            except Exception:  # noqa: BLE001 - the next pass tries again
                log.exception("slack: could not answer %s after a restart", event_id)
                continue
            await self.answered(event_id)
            answered += 1
        if rows:
            log.info("slack: answered %d of %d commands owed from before", answered, len(rows))
        return answered

    def _owed(
        self, now: Any
    ) -> list[tuple[str, str, Invocation | None, list[Reply], dict[str, Any]]]:
        with self.bot.database.session() as session:
            rows = events.owed(
                session,
                platform=PLATFORM,
                since=now - RESPONSE_URL_LIFETIME,
                before=now - OWED_GRACE,
            )
            return [
                (
                    row.event_id,
                    row.state,
                    events.stored_invocation(row),
                    events.stored_replies(row),
                    dict(row.reply_to or {}),
                )
                for row in rows
                if row.event_id not in self._answered
            ]

    def _stored(self, event_id: str) -> list[Reply]:
        with self.bot.database.session() as session:
            row = events.get_event(session, platform=PLATFORM, event_id=event_id)
            return events.stored_replies(row) if row is not None else []
