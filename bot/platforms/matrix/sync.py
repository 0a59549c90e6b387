"""The Matrix sync loop: our own loop over ``client.sync``, with our own checkpoint.

nio's ``sync_forever`` stores ``next_batch`` before running callbacks and ends on the first
exception in one. This loop instead handles every event of a batch (through ``on_event``), and only
then stores the batch's ``next_batch`` in the cosign database. A crash before that re-syncs the same
batch; the adapter skips events the command journal has done (a command is journaled in its own
transaction), sending only their replies if those never went out, so nothing is lost and nothing
repeated. A failing batch is retried with back-off (the homeserver going away is just that);
an event that fails three times is logged and skipped.

History is never a command (rule 10). On the very first start (no checkpoint) the sync asks for a
timeline limit of 0. And a room's events from before the bot joined it are dropped before anything
sees them: Synapse sends a newly joined room's latest events whatever the checkpoint (history from
before the join, even from before the bot ever ran), so in each room's timeline everything up to
the bot's own latest join (its ``m.room.member`` turning into ``join``) is history, and the gap
behind a 'limited' timeline is filled from ``/messages`` only back to that join. As a second line,
an event stamped (``origin_server_ts``) before the join is history too, wherever it sits; the join's
time is remembered per room, and learnt again from the full state every process syncs first.
Commands sent while the bot was down in rooms it had joined come after the join: they are handled.

An encrypted event the bot cannot decrypt yet is not given up at once: its room key often comes a
sync or two later (a to-device message). It waits up to ``key_wait`` seconds, decryption tried again
after every batch; decrypted, it is handled like any event (checked against the command
journal first); still undecryptable at the end, it goes to the adapter as the ``MegolmEvent`` (which
hints the sender). Meanwhile the stored checkpoint stays at the start of the batch the event came
in, so after a restart that batch is synced again and the event is not lost; the long poll is
shortened so the wait ends on time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nio import (
    AsyncClient,
    InviteMemberEvent,
    JoinResponse,
    MatrixRoom,
    MegolmEvent,
    RoomLeaveResponse,
    RoomMemberEvent,
    RoomMessagesResponse,
    SyncResponse,
    UploadFilterResponse,
)
from nio.api import MessageDirection
from nio.exceptions import EncryptionError

from bot.db import Database
from bot.platforms.matrix.send import TRANSPORT_ERRORS, Backoff, RateGate, failure_of
from bot.store import matrix_sync

log = logging.getLogger(__name__)

#: an event whose handling raised this many times is given up (logged), so the loop moves on
MAX_EVENT_FAILURES = 3
#: pages of 100 events fetched to fill the gap of a 'limited' timeline after a long outage
BACKFILL_PAGES = 20
#: seconds an event the bot cannot decrypt waits for its room key (which often arrives a sync or
#: two after the event) before the sender is told; the checkpoint is held back that long at most
KEY_WAIT = 180.0

EventHandler = Callable[[MatrixRoom, Any], Awaitable[None]]


@dataclass
class AwaitingKey:
    """An undecryptable event kept until its room key arrives or its wait ends."""

    room: MatrixRoom
    event: MegolmEvent
    since: str  # the token its batch was synced from
    deadline: float  # time.monotonic()


class SyncFailed(Exception):
    """The homeserver answered /sync (or /messages) with an error."""


SYNC_RETRYABLE: tuple[type[BaseException], ...] = (SyncFailed, *TRANSPORT_ERRORS)


def inviter_allowed(inviter: str | None, allowed: list[str]) -> bool:
    """``[matrix].allowed_inviters``: exact user ids, or ``:server`` suffixes."""
    if not inviter:
        return False
    return any(
        inviter.endswith(entry) if entry.startswith(":") else inviter == entry for entry in allowed
    )


def is_own_join(event: Any, user_id: str) -> bool:
    """The bot's membership becoming ``join``: not a display-name or avatar change (join → join)."""
    return (
        isinstance(event, RoomMemberEvent)
        and event.state_key == user_id
        and event.membership == "join"
        and event.prev_membership != "join"
    )


def after_join(
    events: list[Any], user_id: str, joined_at: int | None
) -> tuple[list[Any], int | None]:
    """The events of one room's timeline (oldest first) that came after the bot joined it.

    Everything up to the bot's latest join in ``events`` is history; so is any later event stamped
    before that join, or before ``joined_at`` (the join remembered from an earlier batch, in ms)
    when ``events`` holds none. Returns the events kept and the join time to remember.
    """
    start = 0
    for index, event in enumerate(events):
        if is_own_join(event, user_id):
            start, joined_at = index + 1, int(event.server_timestamp)
    kept = events[start:]
    if joined_at is not None:
        kept = [e for e in kept if getattr(e, "server_timestamp", joined_at) >= joined_at]
    return kept, joined_at


def sync_filter(limit: int) -> dict[str, Any]:
    """Room timelines and state only: no presence, typing, receipts or account data."""
    return {
        "presence": {"types": []},
        "account_data": {"types": []},
        "room": {
            "timeline": {"limit": limit},
            "ephemeral": {"types": []},
            "account_data": {"types": []},
        },
    }


class SyncLoop:
    def __init__(
        self,
        client: AsyncClient,
        database: Database,
        gate: RateGate,
        *,
        user_id: str,
        allowed_inviters: list[str],
        on_event: EventHandler,
        on_failure: Callable[[MatrixRoom, Any], Awaitable[None]],
        after_batch: Callable[[], Awaitable[None]],
        reconnect_max: float,
        sync_timeout_ms: int,
        timeline_limit: int,
    ) -> None:
        self.client = client
        self.database = database
        self.gate = gate
        self.user_id = user_id
        self.allowed_inviters = allowed_inviters
        self.on_event = on_event
        self.on_failure = on_failure
        self.after_batch = after_batch
        self.reconnect_max = reconnect_max
        self.sync_timeout_ms = sync_timeout_ms
        self.timeline_limit = timeline_limit
        #: seconds an undecryptable event waits for its room key before it is handed on as such
        self.key_wait = KEY_WAIT
        self.ready = asyncio.Event()
        self.stopping = False
        self.handling = False  # between receiving a batch and storing its checkpoint
        #: the batch may hold events handled before (first batch after a start, or a retried
        #: batch): only then must each command be checked against the command journal
        self.replaying = True
        self._failures: dict[str, int] = {}
        self._filter_ids: dict[int, str] = {}
        #: room id -> when the bot joined it (origin_server_ts, ms), where known: the second line
        #: of defence against history (events stamped before the join)
        self._joined_at: dict[str, int] = {}
        #: event id -> an event waiting for its room key, oldest first
        self._awaiting: dict[str, AwaitingKey] = {}

    # --- checkpoint ------------------------------------------------------------------------

    def _load_checkpoint(self) -> str | None:
        with self.database.session() as session:
            return matrix_sync.get_checkpoint(session, user_id=self.user_id)

    def _save_checkpoint(self, next_batch: str) -> None:
        with self.database.session() as session:
            matrix_sync.save_checkpoint(session, user_id=self.user_id, next_batch=next_batch)

    # --- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(cap=self.reconnect_max)
        since = await asyncio.to_thread(self._load_checkpoint)
        first = True
        while not self.stopping:
            try:
                if since is None:  # the very first start: state (and invites), no history
                    response = await self._sync(None, limit=0, full_state=True, timeout=0)
                else:  # full state once per process, so nio knows rooms, members, encryption
                    response = await self._sync(
                        since,
                        limit=self.timeline_limit,
                        full_state=first,
                        timeout=0 if first else self._poll_timeout(),
                    )
                self.handling = True
                try:
                    await self._crypto_housekeeping()
                    self._remember_joins(response)
                    await self._handle_invites(response)
                    if since is not None and not await self._handle_timelines(response, since):
                        return  # stopped mid-batch: the old checkpoint stays
                    await self._retry_awaiting()
                    checkpoint = self._held() or response.next_batch
                    await asyncio.to_thread(self._save_checkpoint, checkpoint)
                finally:
                    self.handling = False
                since, first = response.next_batch, False
                self.replaying = False
                backoff.reset()
                if not self.ready.is_set():
                    log.info("matrix: synced; listening for commands")
                    self.ready.set()
                await self.after_batch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, SYNC_RETRYABLE):
                    log.warning("matrix: sync failed (%s: %s); retrying", type(exc).__name__, exc)
                else:
                    log.exception("matrix: handling a sync batch failed; retrying it")
                self.client.next_batch = since  # so nio decrypts the batch again when re-synced
                self.replaying = True
                await backoff.sleep()

    def _poll_timeout(self) -> int:
        """The long poll's timeout: the configured one, or less when a key wait ends sooner."""
        if not self._awaiting:
            return self.sync_timeout_ms
        wake = min(item.deadline for item in self._awaiting.values()) - time.monotonic()
        return max(0, min(self.sync_timeout_ms, int(wake * 1000) + 50))

    async def _filter(self, limit: int) -> str | dict[str, Any]:
        """A filter uploaded once (an inline filter is parsed again on every request)."""
        if limit in self._filter_ids:
            return self._filter_ids[limit]
        spec = sync_filter(limit)
        response = await self.client.upload_filter(
            presence=spec["presence"], account_data=spec["account_data"], room=spec["room"]
        )
        if isinstance(response, UploadFilterResponse):
            self._filter_ids[limit] = response.filter_id
            return response.filter_id
        return spec

    async def _sync(
        self, since: str | None, *, limit: int, full_state: bool, timeout: int
    ) -> SyncResponse:
        response = await self.client.sync(
            timeout=timeout,
            sync_filter=await self._filter(limit),
            since=since,
            full_state=full_state,
        )
        if not isinstance(response, SyncResponse):
            failure_of(response, self.gate)  # a rate limit on /sync is waited out too
            raise SyncFailed(str(response))
        return response

    async def _crypto_housekeeping(self) -> None:
        """What nio's sync_forever does between syncs: keys uploaded, queried, claimed."""
        client = self.client
        if client.olm is None:
            return
        try:
            await client.send_to_device_messages()
            if client.should_upload_keys:
                await client.keys_upload()
            if client.should_query_keys:
                await client.keys_query()
            if client.should_claim_keys:
                await client.keys_claim(client.get_users_for_key_claiming())
        except TRANSPORT_ERRORS as exc:
            log.warning("matrix: key maintenance failed (%s); the next sync retries", exc)

    # --- a batch -----------------------------------------------------------------------------

    def _remember_joins(self, response: SyncResponse) -> None:
        """The bot's join time in each room whose state shows it (every room, on a full-state
        sync); forgotten for rooms it left."""
        for room_id, info in response.rooms.join.items():
            for event in info.state:
                if is_own_join(event, self.user_id):
                    self._joined_at[room_id] = int(event.server_timestamp)
        for room_id in response.rooms.leave:
            self._joined_at.pop(room_id, None)

    async def _handle_timelines(self, response: SyncResponse, since: str) -> bool:
        """Every timeline event of the batch since the bot joined, in order; False if stopped
        before the end."""
        for room_id, info in response.rooms.join.items():
            room = self.client.rooms.get(room_id)
            if room is None:
                continue
            timeline = list(info.timeline.events)
            joined_here = any(is_own_join(event, self.user_id) for event in timeline)
            if info.timeline.limited and info.timeline.prev_batch and not joined_here:
                timeline = await self._backfill(room_id, info.timeline.prev_batch, since) + timeline
            kept, joined_at = after_join(timeline, self.user_id, self._joined_at.get(room_id))
            if joined_at is not None:
                self._joined_at[room_id] = joined_at
            if len(kept) < len(timeline):
                log.info(
                    "matrix: %d event(s) in %s are from before the bot joined: history, ignored",
                    len(timeline) - len(kept),
                    room_id,
                )
            seen: set[str] = set()
            for event in kept:
                event_id = getattr(event, "event_id", None)
                if not event_id or event_id in seen:
                    continue
                seen.add(event_id)
                if self.stopping:
                    return False
                if isinstance(event, MegolmEvent) and await self._await_key(room, event, since):
                    continue
                await self._guarded(room, event)
        return True

    # --- events waiting for their room key ------------------------------------------------------

    def _was_handled(self, event_id: str) -> bool:
        with self.database.session() as session:
            return matrix_sync.was_handled(session, event_id=event_id)

    async def _await_key(self, room: MatrixRoom, event: MegolmEvent, since: str) -> bool:
        """Keep an undecryptable event to try again later; False: hand it on now (no crypto, or
        the bot's own event, which the adapter ignores anyway)."""
        if self.client.olm is None or event.sender == self.user_id:
            return False
        if event.event_id in self._awaiting:  # the batch is being retried
            return True
        if await asyncio.to_thread(self._was_handled, event.event_id):
            return True  # hinted before a restart
        log.info(
            "matrix: cannot decrypt %s in %s from %s (session %s) yet; waiting for its key",
            event.event_id,
            room.room_id,
            event.sender,
            event.session_id,
        )
        self._awaiting[event.event_id] = AwaitingKey(
            room, event, since, time.monotonic() + self.key_wait
        )
        return True

    def _held(self) -> str | None:
        """The batch token the stored checkpoint must not pass: where the oldest waiting event
        came in (re-syncing from it brings the event back after a restart)."""
        for item in self._awaiting.values():
            return item.since
        return None

    def _decrypt_late(self, item: AwaitingKey) -> Any | None:
        """The event decrypted, if its room key has arrived meanwhile."""
        olm, event = self.client.olm, item.event
        if olm is None:
            return None
        event.room_id = event.room_id or item.room.room_id
        if olm.inbound_group_store.get(event.room_id, event.sender_key, event.session_id) is None:
            return None  # checked first: nio logs a warning for every failed attempt
        try:
            return self.client.decrypt_event(event)
        except EncryptionError as exc:
            log.warning("matrix: %s still cannot be decrypted: %s", event.event_id, exc)
            return None

    async def _retry_awaiting(self) -> None:
        """After a batch (its to-device keys already taken in by nio): handle what decrypts now,
        hand on as undecryptable what waited ``key_wait``; the rest waits on."""
        for event_id, item in list(self._awaiting.items()):
            if self.stopping:
                return
            decrypted = self._decrypt_late(item)
            if decrypted is None and time.monotonic() < item.deadline:
                continue
            if decrypted is None:
                log.warning("matrix: no key for %s after %.0f s", event_id, self.key_wait)
                await self._guarded(item.room, item.event)
            else:
                log.info("matrix: %s decrypted after its key arrived", event_id)
                replaying, self.replaying = self.replaying, True  # it may have been handled
                try:
                    await self._guarded(item.room, decrypted)
                finally:
                    self.replaying = replaying
            del self._awaiting[event_id]  # only once handled: a failure retries it

    async def _guarded(self, room: MatrixRoom, event: Any) -> None:
        """One event; a failure retries the batch, the third failure is logged and skipped."""
        try:
            await self.on_event(room, event)
        except asyncio.CancelledError:
            raise
        except Exception:
            count = self._failures.get(event.event_id, 0) + 1
            self._failures[event.event_id] = count
            if count < MAX_EVENT_FAILURES:
                raise
            log.exception(
                "matrix: giving up on event %s in %s after %d failures",
                event.event_id,
                room.room_id,
                count,
            )
            await self.on_failure(room, event)

    async def _backfill(self, room_id: str, prev_batch: str, since: str) -> list[Any]:
        """The events between our checkpoint and a 'limited' timeline, oldest first; it stops at
        the bot's join (what lies before is history, and a long one would eat the page budget)."""
        collected: list[Any] = []
        token = prev_batch
        for _ in range(BACKFILL_PAGES):
            response = await self.client.room_messages(
                room_id, start=token, end=since, direction=MessageDirection.back, limit=100
            )
            if not isinstance(response, RoomMessagesResponse):
                raise SyncFailed(f"backfill of {room_id} failed: {response}")
            collected.extend(response.chunk)
            if any(is_own_join(event, self.user_id) for event in response.chunk):
                break
            if not response.chunk or not response.end or response.end == token:
                break
            token = response.end
        else:
            log.warning("matrix: backfill of %s stopped after %d pages", room_id, BACKFILL_PAGES)
        for event in collected:
            if isinstance(event, MegolmEvent) and not getattr(event, "room_id", None):
                event.room_id = room_id
        return list(reversed(collected))

    async def _handle_invites(self, response: SyncResponse) -> None:
        """Accept invites from ``allowed_inviters``; decline every other."""
        for room_id, info in response.rooms.invite.items():
            inviter = None
            for event in info.invite_state:
                if (
                    isinstance(event, InviteMemberEvent)
                    and event.state_key == self.user_id
                    and event.membership == "invite"
                ):
                    inviter = event.sender
            if inviter_allowed(inviter, self.allowed_inviters):
                joined = await self.client.join(room_id)
                if isinstance(joined, JoinResponse):
                    log.info("matrix: joined %s (invited by %s)", room_id, inviter)
                else:
                    log.warning("matrix: could not join %s: %s", room_id, joined)
            else:
                left = await self.client.room_leave(room_id)
                outcome = "declined" if isinstance(left, RoomLeaveResponse) else f"failed: {left}"
                log.info(
                    "matrix: invite to %s from %s %s (not in matrix.allowed_inviters)",
                    room_id,
                    inviter,
                    outcome,
                )
