"""Direct messages on Matrix: one direct room per member, made once by the bot and kept.

Matrix has no "message this user" call: a direct message is a room with the two of them, created
with ``is_direct`` (the homeserver sets ``is_direct`` on the invite, so the member's client shows
it under direct messages) and listed in the creator's ``m.direct`` account data ({user id: [room
ids]}, spec "Direct Messaging"). Preset ``trusted_private_chat`` (invite only, the member as
powerful as the bot); encrypted from its first event when ``[matrix].encryption`` is true.

Finding the room, in order: the cosign database (``MatrixDirectRoom``), then ``m.direct``, then a
new room. A room is kept while the bot is in it and the member is invited or joined; if the
member left (or rejected the invite), the bot leaves it and makes a new one. The room is
recorded in the database before anything is sent in it, so an outbox row delivered again (after
a crash, or on a second replica) finds it instead of creating another; two replicas racing to
create are settled by the row's unique user id (the loser leaves its room). A homeserver that
cannot be asked (down, rate limited) never counts as "no room": the delivery is retried.

This is how matrix-bot-sdk's ``DMs`` does it too: the homeserver's ``m.direct`` outlives the bot's
own storage, and reading it answers 404 ``M_NOT_FOUND`` until it is first written (an empty map).

The member's messages in the room are commands like in any room (the sync loop handles every
joined room; the bot made this one, so no invite policy applies).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import quote

from nio import (
    AsyncClient,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomPreset,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from bot.db import Database
from bot.models.matrix import MatrixDirectRoom
from bot.platforms.base import Delivery
from bot.platforms.matrix.send import TRANSPORT_ERRORS, RateGate, failure_of

log = logging.getLogger(__name__)

M_DIRECT = "m.direct"
MEGOLM = "m.megolm.v1.aes-sha2"
#: memberships that keep a direct room usable: the member can read what the bot sends there
LIVE = frozenset({"invite", "join"})
#: seconds to wait for a new room to reach the bot's sync (nio encrypts only for rooms it knows)
ROOM_WAIT = 15.0


class Unreachable(Exception):
    """The homeserver could not be asked; carries the Delivery to retry with."""

    def __init__(self, delivery: Delivery) -> None:
        super().__init__(delivery.error)
        self.delivery = delivery


# --- the database record -----------------------------------------------------------------------


def recorded_room(database: Database, user_id: str) -> str | None:
    with database.session() as session:
        row = session.exec(
            select(MatrixDirectRoom).where(MatrixDirectRoom.user_id == user_id)
        ).first()
        return row.room_id if row is not None else None


def record_room(database: Database, user_id: str, room_id: str, *, replaces: str | None) -> str:
    """Store ``room_id`` as the user's direct room (in place of ``replaces``, if given); returns
    the room that is recorded afterwards, which is another one if someone else got there first."""
    try:
        with database.session() as session:
            row = session.exec(
                select(MatrixDirectRoom).where(MatrixDirectRoom.user_id == user_id)
            ).first()
            if row is None:
                session.add(MatrixDirectRoom(user_id=user_id, room_id=room_id))
                return room_id
            if row.room_id != replaces:
                return row.room_id  # recorded meanwhile by another delivery or replica
            row.room_id = room_id
            session.add(row)
            return room_id
    except IntegrityError:  # a concurrent insert won the unique user id
        stored = recorded_room(database, user_id)
        if stored is None:
            raise
        return stored


# --- the rooms ---------------------------------------------------------------------------------


class DirectRooms:
    """Finds or makes the direct room of a Matrix user (see the module docstring)."""

    def __init__(
        self,
        client: AsyncClient,
        database: Database,
        gate: RateGate,
        *,
        encryption: bool,
        room_wait: float = ROOM_WAIT,
    ) -> None:
        self.client = client
        self.database = database
        self.gate = gate
        self.encryption = encryption
        self.room_wait = room_wait
        self._locks: dict[str, asyncio.Lock] = {}
        #: rooms seen listed in m.direct by this process (checked once per process)
        self._listed: set[str] = set()

    async def room_for(self, user_id: str) -> str | Delivery:
        """The user's direct room, ready to send in; a failed Delivery if not (yet)."""
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            try:
                room_id = await self._find_or_create(user_id)
            except Unreachable as exc:
                return exc.delivery
        if isinstance(room_id, Delivery):
            return room_id
        if not await self._synced(room_id):
            return Delivery.failed(f"direct room {room_id} not synced yet")
        return room_id

    async def _find_or_create(self, user_id: str) -> str | Delivery:
        stale: set[str] = set()
        recorded = await asyncio.to_thread(recorded_room, self.database, user_id)
        if recorded is not None:
            if await self._usable(recorded, user_id):
                await self._list(user_id, recorded, drop=stale)
                return recorded
            stale.add(recorded)
        for room_id in await self._listed_in_m_direct(user_id):
            if room_id in stale or not await self._usable(room_id, user_id):
                stale.add(room_id)
                continue
            kept = await asyncio.to_thread(
                record_room, self.database, user_id, room_id, replaces=recorded
            )
            await self._list(user_id, kept, drop=stale - {kept})
            await self._leave(stale - {kept})
            return kept
        created = await self._create(user_id)
        if isinstance(created, Delivery):
            return created
        kept = await asyncio.to_thread(
            record_room, self.database, user_id, created, replaces=recorded
        )
        if kept != created:  # another replica recorded its room first: use that one
            await self._leave({created})
            stale.add(created)
        await self._list(user_id, kept, drop=stale - {kept})
        await self._leave(stale - {kept, created})
        return kept

    # --- membership ------------------------------------------------------------------------

    async def _usable(self, room_id: str, user_id: str) -> bool:
        """Whether the bot is in the room and the user invited or joined: asked of the
        homeserver (a member who left while the bot was away is seen at once)."""
        await self.gate.wait()
        try:
            response = await self.client.room_get_state_event(room_id, "m.room.member", user_id)
        except TRANSPORT_ERRORS as exc:
            raise Unreachable(Delivery.failed(f"homeserver unreachable: {exc}")) from exc
        if isinstance(response, RoomGetStateEventResponse):
            return str(response.content.get("membership")) in LIVE
        failed = failure_of(response, self.gate)
        if failed.permanent:  # M_FORBIDDEN (the bot is not in it), M_NOT_FOUND (never invited)
            return False
        raise Unreachable(failed)

    async def _synced(self, room_id: str) -> bool:
        """Wait until the sync loop has seen the room: nio encrypts only for rooms it knows (with
        their members and encryption state). Unencrypted sends need no wait."""
        if self.client.olm is None:
            return True
        deadline = time.monotonic() + self.room_wait
        while room_id not in self.client.rooms:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _create(self, user_id: str) -> str | Delivery:
        initial_state: list[dict[str, Any]] = []
        if self.encryption:
            initial_state.append(
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}
            )
        await self.gate.wait()
        try:
            response = await self.client.room_create(
                is_direct=True,
                invite=[user_id],
                preset=RoomPreset.trusted_private_chat,
                initial_state=initial_state,
            )
        except TRANSPORT_ERRORS as exc:
            return Delivery.failed(f"homeserver unreachable: {exc}")
        if not isinstance(response, RoomCreateResponse):
            return failure_of(response, self.gate)
        log.info("matrix: created direct room %s for %s", response.room_id, user_id)
        return str(response.room_id)

    async def _leave(self, rooms: set[str]) -> None:
        """Leave rooms no longer used (best effort: a failure leaves an idle room behind)."""
        for room_id in rooms:
            try:
                await self.client.room_leave(room_id)
            except TRANSPORT_ERRORS as exc:
                log.warning("matrix: could not leave old direct room %s: %s", room_id, exc)

    # --- m.direct ----------------------------------------------------------------------------

    def _account_data_path(self) -> str:
        user = quote(str(self.client.user_id), safe="")
        return f"/_matrix/client/v3/user/{user}/account_data/{M_DIRECT}"

    async def _call(self, method: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        await self.gate.wait()
        try:
            response = await self.client.send(method, self._account_data_path(), data, headers)
            try:
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    payload = None
            finally:
                response.release()
        except TRANSPORT_ERRORS as exc:
            raise Unreachable(Delivery.failed(f"homeserver unreachable: {exc}")) from exc
        if response.status == 429 or (
            isinstance(payload, dict) and payload.get("errcode") == "M_LIMIT_EXCEEDED"
        ):
            retry_ms = payload.get("retry_after_ms") if isinstance(payload, dict) else None
            seconds = max(0.05, (retry_ms or 5000) / 1000)
            self.gate.block(seconds)
            raise Unreachable(Delivery.failed("M_LIMIT_EXCEEDED on m.direct", retry_after=seconds))
        return response.status, payload

    async def _m_direct(self) -> dict[str, list[str]]:
        """The bot's ``m.direct`` (404 ``M_NOT_FOUND``: never set, so empty)."""
        status, payload = await self._call("GET")
        if status == 404:
            return {}
        if status != 200 or not isinstance(payload, dict):
            raise Unreachable(Delivery.failed(f"reading m.direct: HTTP {status}"))
        return {
            str(user): [str(r) for r in rooms]
            for user, rooms in payload.items()
            if isinstance(rooms, list)
        }

    async def _listed_in_m_direct(self, user_id: str) -> list[str]:
        """The user's rooms in ``m.direct``, newest (last added) first."""
        return list(reversed((await self._m_direct()).get(user_id, [])))

    async def _list(self, user_id: str, room_id: str, *, drop: set[str]) -> None:
        """Make ``m.direct`` list ``room_id`` for the user (and no longer the rooms in ``drop``),
        keeping everything else in it; once per room and process when nothing changes."""
        if room_id in self._listed and not drop:
            return
        current = await self._m_direct()
        rooms = current.get(user_id, [])
        wanted = [r for r in rooms if r not in drop and r != room_id] + [room_id]
        if wanted != rooms:
            current[user_id] = wanted
            status, payload = await self._call("PUT", current)
            if status != 200:
                raise Unreachable(Delivery.failed(f"writing m.direct: HTTP {status} {payload}"))
        self._listed.add(room_id)
