"""The Matrix platform: matrix-nio's AsyncClient (with end-to-end encryption) as a thin adapter.

A text event ``!sign …`` (or a literal ``/sign …``) becomes an ``Invocation``; each ``Reply`` goes
back as an ``m.notice`` replying to the command (in its thread), plain ``body`` plus sanitised HTML,
``"m.mentions": {}``. Letter posts, reminders and compiled letters come from the outbox, as
``m.text`` (notices never notify); the live counter edits letter posts with ``m.replace``. The bot
ignores its own events, so its posts are never commands.

Durability (DESIGN.md rules 10 and 12). nio would store ``next_batch`` before running callbacks, so
cosign runs its own loop over ``client.sync``. A command is journaled (``bot.store.events``): its
invocation carries ``reply_to`` (room, event id, thread root), so the dispatcher marks the event
done and keeps its replies in the command's own transaction; only when every event of the batch is
journaled is the batch's ``next_batch`` stored as the checkpoint. A crash before a command commits
re-syncs the batch and runs it then; after it, the replayed event is found done and is not run
again, and its stored replies go out if they never did. Replies are rendered and sent at once by
a sender task, which marks the journal row answered; what is owed after a crash is sent on the
next start. Every send carries a transaction id derived from the command's event id, so a re-sent
reply is not a second message.

History is never a command: on the bot's very first sync (no checkpoint) the timeline is requested
with limit 0, and in a room the bot joins, what came before its join (Synapse sends some with the
join, from before the bot ever ran too) is dropped by the sync loop before it reaches
``_handle_event``: no reply, no signature (``bot.platforms.matrix.sync``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any

from nio import AsyncClient, AsyncClientConfig, MatrixRoom, MegolmEvent, RoomMessageText

from bot.config import ConfigError, Settings
from bot.core import Invocation, Reply, parse_text
from bot.platforms.base import Delivery, Platform
from bot.platforms.matrix.content import (
    Rendered,
    command_text,
    is_edit,
    render_pair,
    reply_pair,
    thread_and_reply,
)
from bot.platforms.matrix.cross_signing import Outcome, Status, ensure_cross_signed
from bot.platforms.matrix.direct import DirectRooms
from bot.platforms.matrix.outbox import Publisher
from bot.platforms.matrix.replies import ReplyQueue
from bot.platforms.matrix.send import TRANSPORT_ERRORS, Backoff, Sender
from bot.platforms.matrix.session import Credentials, HomeserverUnavailable, login, prepare_store
from bot.platforms.matrix.sync import SyncLoop
from bot.store import matrix_sync
from bot.store.matrix_sync import Answer

if TYPE_CHECKING:
    from bot.models import OutboxMessage
    from bot.publishing import PostView
    from bot.runtime import Bot

log = logging.getLogger(__name__)

#: how long the sync loop lets a batch's replies go out before it polls again
REPLY_WAIT = 2.0
#: the dispatcher's replies that roll back with their command (refusals, apologies): not in the
#: journal, so the adapter journals them (``bot.core.error_reply``, ``bot.core.apology``)
UNJOURNALED = frozenset({"replies/error.j2", "replies/apology.j2"})
LOGIN_RETRYABLE: tuple[type[BaseException], ...] = (HomeserverUnavailable, *TRANSPORT_ERRORS)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


class MatrixPlatform(Platform):
    name = "matrix"
    live_counter = True
    counter_interval = 5.0  # Synapse's default rc_message is 0.2/s with a burst of 10

    def __init__(
        self,
        settings: Settings,
        *,
        access_token: str | None = None,
        password: str | None = None,
        pickle_key: str | None = None,
        counter_interval: float | None = None,
        reconnect_max: float = 30.0,
        sync_timeout_ms: int = 30_000,
        timeline_limit: int = 50,
        ready_timeout: float = 15.0,
    ) -> None:
        """Secrets default to the environment (``settings.secrets``); tests pass them here."""
        self.settings = settings
        self.config = settings.matrix
        secrets = settings.secrets
        self.credentials = Credentials(
            access_token=access_token or _secret(secrets.matrix_access_token),
            password=password or _secret(secrets.matrix_password),
            pickle_key=pickle_key or _secret(secrets.matrix_pickle_key),
        )
        if counter_interval is not None:
            self.counter_interval = counter_interval
        self.reconnect_max = reconnect_max
        self.sync_timeout_ms = sync_timeout_ms
        self.timeline_limit = timeline_limit
        self.ready_timeout = ready_timeout
        self._check_configuration()
        self.user_id = self.config.user_id
        self.device_id = self.config.device_id
        self.client: AsyncClient | None = None
        self.sender: Sender | None = None
        self.replies: ReplyQueue | None = None
        self.publisher: Publisher | None = None
        self.loop: SyncLoop | None = None
        self._bot: Bot | None = None
        self._main_task: asyncio.Task[None] | None = None
        self._reply_task: asyncio.Task[None] | None = None
        #: what the start-up cross-signing check did (DESIGN.md rule 10)
        self.cross_signing: Outcome | None = None
        if logging.getLogger("nio").level == logging.NOTSET:
            logging.getLogger("nio").setLevel(logging.WARNING)  # nio logs every event at INFO

    def _check_configuration(self) -> None:
        """Refuse to start (naming the key) rather than fail later in the background."""
        from nio.crypto import ENCRYPTION_ENABLED

        if self.config.encryption and not ENCRYPTION_ENABLED:
            raise ConfigError(
                "matrix.encryption: matrix-nio was installed without its e2e extra (vodozemac)"
            )
        if self.config.encryption and not self.credentials.pickle_key:
            raise ConfigError(
                "MATRIX_PICKLE_KEY: required when matrix.encryption is true (it encrypts the "
                "keys in matrix.store_path)"
            )
        if not (self.credentials.access_token or self.credentials.password):
            raise ConfigError("matrix: set MATRIX_ACCESS_TOKEN or MATRIX_PASSWORD")
        if not self.config.user_id.startswith("@") or ":" not in self.config.user_id:
            raise ConfigError(f"matrix.user_id: {self.config.user_id!r} is not @name:server")

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.loop is not None and self.loop.ready.is_set()

    async def start(self, bot: Bot) -> None:
        """Log in and do the first sync (waiting up to ``ready_timeout``), then run in the
        background; an unreachable homeserver is retried there, bad credentials stop start-up."""
        self._bot = bot
        store = prepare_store(self.config.store_path)
        self.client = client = AsyncClient(
            self.config.homeserver.rstrip("/"),
            self.config.user_id,
            device_id=self.config.device_id,
            store_path=str(store),
            config=AsyncClientConfig(
                encryption_enabled=self.config.encryption,
                pickle_key=self.credentials.pickle_key or "",
                store_sync_tokens=False,  # our own checkpoint, written after handling
                max_limit_exceeded=0,  # rate limits are waited out by us, bounded
                max_timeouts=1,  # connection loss is retried by our loop, with back-off
                request_timeout=45,
            ),
        )
        self.sender = Sender(client, encryption=self.config.encryption)
        self.loop = SyncLoop(
            client,
            bot.database,
            self.sender.gate,
            user_id=self.config.user_id,
            allowed_inviters=list(self.config.allowed_inviters),
            on_event=self._handle_event,
            on_failure=self._give_up,
            after_batch=self._after_batch,
            reconnect_max=self.reconnect_max,
            sync_timeout_ms=self.sync_timeout_ms,
            timeline_limit=self.timeline_limit,
        )
        self.replies = ReplyQueue(
            bot.database,
            self.sender,
            self.loop.ready,
            reconnect_max=self.reconnect_max,
            render=self._render,
        )
        directs = DirectRooms(
            client, bot.database, self.sender.gate, encryption=self.config.encryption
        )
        self.publisher = Publisher(self, bot.database, self.sender, directs)
        self._main_task = asyncio.create_task(self._main(), name="matrix-sync")
        self._reply_task = asyncio.create_task(self.replies.run(), name="matrix-replies")
        waiter = asyncio.create_task(self.loop.ready.wait())
        done, _ = await asyncio.wait(
            {waiter, self._main_task},
            timeout=self.ready_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        waiter.cancel()
        if self._main_task in done:
            error = self._main_task.exception()
            await self.stop()
            raise error or RuntimeError("the Matrix sync loop ended during start-up")
        if not self.ready:
            log.warning("matrix: not connected yet; still trying in the background")

    async def _main(self) -> None:
        assert self.client is not None and self.loop is not None and self.replies is not None
        backoff = Backoff(cap=self.reconnect_max)
        while True:
            try:
                self.user_id, self.device_id = await login(
                    self.client,
                    user_id=self.config.user_id,
                    device_id=self.config.device_id,
                    store=self.config.store_path,
                    credentials=self.credentials,
                )
                break
            except LOGIN_RETRYABLE as exc:
                log.warning("matrix: cannot log in yet (%s); retrying", exc.__class__.__name__)
                await backoff.sleep()
        log.info(
            "matrix: %s device %s, fingerprint %s", self.user_id, self.device_id, self.fingerprint
        )
        # Before the first sync (which would upload device keys concurrently): Element talks
        # only to cross-signed devices (MSC4153).
        self.cross_signing = await ensure_cross_signed(
            self.client,
            store=self.config.store_path,
            password=self.credentials.password,
            pickle_key=self.credentials.pickle_key,
            retry_cap=self.reconnect_max,
        )
        await self.replies.load_owed()  # what a crash left unanswered goes out first
        await self.loop.run()

    async def stop(self) -> None:
        """Let a batch being handled finish (briefly), then stop; safe to call twice."""
        task = self._main_task
        if self.loop is not None:
            self.loop.stopping = True
        if task is not None and not task.done() and self.loop is not None and self.loop.handling:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=5)
            except (TimeoutError, asyncio.CancelledError, Exception):
                pass
        for pending in (self._main_task, self._reply_task):
            if pending is None:
                continue
            pending.cancel()
            try:
                await pending
            except (asyncio.CancelledError, Exception):
                pass
        self._main_task = self._reply_task = None
        if self.replies is not None:
            try:
                await self.replies.flush()  # else what was sent is sent again after a restart
            except Exception:
                log.exception("matrix: could not record the last answers sent")
        if self.client is not None:
            await self.client.close()
            self.client = None

    @property
    def fingerprint(self) -> str:
        """The device's ed25519 key in groups of four, as clients show it for verification."""
        olm = self.client.olm if self.client is not None else None
        if olm is None:
            return "(no encryption)"
        key = str(olm.account.identity_keys.get("ed25519", ""))
        return " ".join(key[i : i + 4] for i in range(0, len(key), 4))

    @property
    def cross_signed(self) -> bool:
        """Whether the device is signed by the account's self-signing key (as of start-up)."""
        signed = (Status.ALREADY_SIGNED, Status.SIGNED, Status.CREATED, Status.REPLACED)
        return self.cross_signing is not None and self.cross_signing.status in signed

    async def _after_batch(self) -> None:
        assert self.replies is not None
        await self.replies.let_out(REPLY_WAIT)

    # --- commands ----------------------------------------------------------------------------

    async def _handle_event(self, room: MatrixRoom, event: Any) -> None:
        """A timeline event: a command becomes a journaled Invocation; its replies go out."""
        if getattr(event, "sender", None) == self.user_id:
            return
        if isinstance(event, MegolmEvent):
            await self._undecryptable(room, event)
            return
        if not isinstance(event, RoomMessageText):
            return  # notices, emotes, state, other message types: never commands
        content = event.source.get("content") or {}
        if not isinstance(content, dict) or is_edit(content):
            return
        parsed = parse_text(command_text(content))
        if parsed is None:
            return
        assert self._bot is not None and self.replies is not None and self.loop is not None
        if self.loop.replaying and await self.replies.send_journaled(event.event_id):
            return  # handled before: not run again; its answer goes out if it never did
        thread_root, reply_to = thread_and_reply(content)
        invocation = Invocation(
            platform=self.name,
            channel=room.room_id,
            user=event.sender,
            command=parsed[0],
            args=parsed[1],
            thread=thread_root or reply_to,
            event_id=event.event_id,
            display_name=room.user_name(event.sender) or event.sender,
            reply_to=matrix_sync.reply_to(room.room_id, event.event_id, thread_root),
        )
        replies = await self._bot.handle(invocation)
        if not replies:  # the journal has it done (a replay): its stored answer is what is owed
            await self.replies.send_journaled(event.event_id)
            return
        answer = Answer(event.event_id, room.room_id, thread_root, tuple(replies))
        if any(reply.template in UNJOURNALED for reply in replies):
            await self.replies.journal(answer)  # a refusal rolled back: journaled here, then sent
        else:
            self.replies.send(answer)  # journaled with the command, committed: out at once

    async def _give_up(self, room: MatrixRoom, event: Any) -> None:
        """An event whose handling kept failing: apologise, journal it handled, move on."""
        assert self.replies is not None
        error_id = secrets.token_hex(4)
        log.error("matrix: error %s: event %s was given up", error_id, event.event_id)
        replies: tuple[Reply, ...] = ()
        if isinstance(event, RoomMessageText):
            replies = (Reply("replies/apology.j2", {"error_id": error_id}),)
        try:
            await self.replies.journal(Answer(event.event_id, room.room_id, None, replies))
        except Exception:
            log.exception("matrix: could not mark %s handled", event.event_id)

    def _render(self, reply: Reply) -> Rendered:
        try:
            return reply_pair(reply)
        except Exception:
            log.exception("matrix: rendering %s failed", reply.template)
            return render_pair("replies/apology.j2", error_id="render")

    async def _undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        """Log it and hint the sender, within limits: one hint per sender per room in a window,
        and a few per room a minute (``bot.store.matrix_sync``), so fresh key sessions cannot
        make the bot answer without end. (The sync loop hands an event on as a ``MegolmEvent``
        only after waiting ``key_wait`` for its key; nio's key requests go to the bot's own
        other devices, of which it has none.)
        """
        assert self.replies is not None
        hint = Reply(
            "matrix/undecryptable.j2",
            {"device": self.device_id, "user": self.user_id, "cross_signed": self.cross_signed},
        )
        replies = await asyncio.to_thread(self._record_undecryptable, room.room_id, event, hint)
        if replies is None:  # journaled before a restart: its hint, if any, is sent if owed
            await self.replies.send_journaled(event.event_id)
            return
        log.warning(
            "matrix: cannot decrypt %s in %s from %s (device %s, session %s)%s",
            event.event_id,
            room.room_id,
            event.sender,
            event.device_id,
            event.session_id,
            "" if replies else "; no hint (the hint limit is reached)",
        )
        self.replies.send(Answer(event.event_id, room.room_id, None, tuple(replies)))

    def _record_undecryptable(
        self, room_id: str, event: MegolmEvent, hint: Reply
    ) -> list[Reply] | None:
        assert self._bot is not None
        with self._bot.database.session() as session:
            return matrix_sync.record_undecryptable(
                session, event_id=event.event_id, room_id=room_id, sender=event.sender, hint=hint
            )

    # --- outbox and live counter -------------------------------------------------------------

    async def _wait_ready(self, timeout: float = 10.0) -> bool:
        if self.loop is None:
            return False
        try:
            await asyncio.wait_for(self.loop.ready.wait(), timeout=timeout)
        except TimeoutError:
            return False
        return True

    async def deliver(self, message: OutboxMessage) -> Delivery:
        if not await self._wait_ready() or self.publisher is None or self.replies is None:
            return Delivery.failed("not connected to the homeserver yet")
        if message.kind == matrix_sync.REPLY_KIND:  # a reply the sender task handed over
            return await self.replies.deliver(
                message.channel, message.payload, message.idempotency_key
            )
        return await self.publisher.deliver(message)

    async def update_post(self, post: PostView) -> Delivery:
        """Edit the letter post (``m.replace``) to show the current count and state."""
        if not self.ready or self.publisher is None or self.sender is None:
            return Delivery.failed("not connected to the homeserver yet")
        # Replies to people come first: a counter edit can wait for the next pass.
        waiting = self.replies.pending if self.replies is not None else 0
        busy = max(self.sender.gate.remaining(), self.counter_interval if waiting else 0.0)
        if busy > 0:
            return Delivery.failed("replies first", retry_after=busy)
        return await self.publisher.update_post(post)
