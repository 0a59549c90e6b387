"""The Matrix sync loop: our own loop over ``client.sync``, with our own checkpoint.

nio's ``sync_forever`` stores ``next_batch`` before running callbacks and ends on the first
exception in one. This loop instead handles every event of a batch (through ``on_event``), and only
then stores the batch's ``next_batch`` in the cosign database. A crash before that re-syncs the same
batch; the adapter skips events already handled (the handled-event table), so nothing is lost and
nothing repeated. A failing batch is retried with back-off (the homeserver going away is just that);
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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
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

from bot.db import Database
from bot.platforms.matrix.send import TRANSPORT_ERRORS, Backoff, RateGate, failure_of
from bot.store import matrix_sync

log = logging.getLogger(__name__)

#: an event whose handling raised this many times is given up (logged), so the loop moves on
MAX_EVENT_FAILURES = 3
#: pages of 100 events fetched to fill the gap of a 'limited' timeline after a long outage
BACKFILL_PAGES = 20

EventHandler = Callable[[MatrixRoom, Any], Awaitable[None]]


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
        self.ready = asyncio.Event()
        self.stopping = False
        self.handling = False  # between receiving a batch and storing its checkpoint
        #: the batch may hold events handled before (first batch after a start, or a retried
        #: batch): only then must each command be checked against the handled-event table
        self.replaying = True
        self._failures: dict[str, int] = {}
        self._filter_ids: dict[int, str] = {}
        #: room id -> when the bot joined it (origin_server_ts, ms), where known: the second line
        #: of defence against history (events stamped before the join)
        self._joined_at: dict[str, int] = {}

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
                        timeout=0 if first else self.sync_timeout_ms,
                    )
                self.handling = True
                try:
                    await self._crypto_housekeeping()
                    self._remember_joins(response)
                    await self._handle_invites(response)
                    if since is not None and not await self._handle_timelines(response, since):
                        return  # stopped mid-batch: the old checkpoint stays
                    await asyncio.to_thread(self._save_checkpoint, response.next_batch)
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
                await self._guarded(room, event)
        return True

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
