"""A local fake of Slack's Web API, response_url hooks, file uploads and Socket Mode.

Why: the bot must be tested against what Slack really does (limits, errors, 429s, acks) without
the network. Modeled on slack-bolt's own ``tests/mock_web_api_server``, but async (aiohttp.web),
stateful (messages, files, views) and strict about Slack's documented limits.

Usage::

    async with FakeSlack() as fake:
        client = AsyncWebClient(token=fake.token, base_url=fake.api_url)
        await client.chat_postMessage(channel="C1", text="hi")
        assert fake.calls_to("chat.postMessage")[0].args["text"] == "hi"

Everything listens on 127.0.0.1 on one free port:

- ``/api/<method>``: the Web API (``fake.api_url``). Arguments are merged from the query string,
  form body and JSON body (slack-sdk sends ``params=`` as a query string, ``json=`` for methods
  carrying blocks). Auth is ``Authorization: Bearer <token>`` (or a ``token`` form field).
- ``/upload/v1/<file_id>``: the upload URL that ``files.getUploadURLExternal`` hands out.
- ``/response_url/<token>``: ``fake.response_url(token)``; POSTs are recorded as
  ``Call(method="response_url")``. Like Slack's hooks, success is ``200 text/plain "ok"`` and a
  bad payload is ``400 text/plain "<error>"`` (not ``200 {"ok": false}`` as on the Web API).
- ``/link/?ticket=...``: the Socket Mode websocket. ``fake.socket_mode`` (a ``FakeSocketMode``)
  drives it; ``apps.connections.open`` (needs an ``xapp-`` token) returns its URL. Close the
  bolt handler before the fake, or the client keeps reconnecting to a dead port.

Membership and scopes, as Slack enforces them: ``fake.add_channel(id, private=..., member=...)``
declares a channel, ``fake.invite_bot(id)`` is a user's ``/invite @cosign`` (the only way into a
private channel) and ``conversations.join`` joins public ones. ``fake.install(manifest)`` grants
exactly the manifest's bot scopes and App Home settings (without it every scope is granted).
Direct messages: chat.postMessage to a user id lands in the bot's IM with that user, a ``D…``
conversation made once per user (``fake.ims``, ``fake.im_of(user)``), the one conversations.open
(``im:write``) returns; ``fake.dms_readable_by(user)`` is what that user can read of it.

Injected trouble: ``fake.rate_limit(method, times, retry_after)`` and
``fake.fail(method, error, times)``. Payload builders and ``sign_request`` at the bottom of the
module produce what Slack POSTs to the bot, from templates in ``tests/data/slack/``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import mimetypes
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.web_request import FileField

TEAM_ID = "T1"
TEAM_DOMAIN = "cosign-test"
APP_ID = "A1"
BOT_ID = "B1"
BOT_USER_ID = "UBOT"
DEFAULT_TOKEN = "xoxb-test-token"
DEFAULT_APP_TOKEN = "xapp-1-A1-test-token"
DEFAULT_SECRET = "test-signing-secret"

DATA_DIR = Path(__file__).parent / "data" / "slack"

#: Block types Slack accepts in messages; anything else is ``invalid_blocks``.
BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "context_actions",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELD = 2000
MAX_HEADER_TEXT = 150
MAX_BLOCK_ID = 255
MAX_ACTION_ID = 255
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_MARKDOWN_BLOCK = 12000
MAX_MESSAGE_TEXT = 40000
MAX_VIEW_TITLE = 24
MAX_PRIVATE_METADATA = 3000

Handler = Callable[[dict[str, Any], "Call"], dict[str, Any]]

#: The bot scopes each method needs (any one of them), from each method's "Scopes" on
#: docs.slack.dev/reference/methods/<method>. Enforced once a manifest is installed.
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "chat.delete": ("chat:write",),
    "conversations.join": ("channels:join",),
    "conversations.open": ("im:write", "mpim:write"),
    "conversations.info": ("channels:read", "groups:read", "im:read", "mpim:read"),
    "files.getUploadURLExternal": ("files:write",),
    "files.completeUploadExternal": ("files:write",),
    "users.info": ("users:read",),
    "users.lookupByEmail": ("users:read.email",),
}
#: files.completeUploadExternal's channel_id takes conversation ids only; a user id is refused
#: with "input must match regex pattern: ^[CGDZ][A-Z0-9]{8,}$" (slackapi/bolt-js#2115).
CONVERSATION_ID_PREFIXES = "CGDZ"


@dataclass
class Call:
    """One request the fake received; ``at`` is ``time.monotonic()`` so gaps can be measured."""

    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    at: float
    path: str = ""
    status: int = 200
    response: Any = None
    rate_limited: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the fake answered success (HTTP 200 and not ``ok: false``)."""
        if self.status != 200:
            return False
        return not (isinstance(self.response, dict) and self.response.get("ok") is False)

    @property
    def error(self) -> str | None:
        """The Slack error code answered, if any."""
        if isinstance(self.response, dict):
            return self.response.get("error")
        if self.status != 200 and isinstance(self.response, str):
            return self.response
        return None

    @property
    def no_text(self) -> bool:
        """The message had blocks/attachments but no fallback ``text`` (bad for notifications)."""
        return "no_text" in self.warnings

    @property
    def link_names(self) -> bool:
        """``link_names`` was truthy: Slack would turn ``@channel`` typed by users into pings."""
        return "link_names" in self.warnings

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup (HTTP headers are case-insensitive, dicts are not)."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


@dataclass
class UploadedFile:
    """A file uploaded through the v2 flow; also readable as ``f["content"]``."""

    id: str
    filename: str
    length: int
    content: bytes = b""
    title: str | None = None
    channel: str | None = None
    channels: list[str] = field(default_factory=list)
    initial_comment: str | None = None
    thread_ts: str | None = None
    alt_txt: str | None = None
    snippet_type: str | None = None
    uploaded: bool = False
    completed: bool = False

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


class SlackError(Exception):
    """Raised inside handlers to answer ``{"ok": false, "error": ...}`` like Slack does."""

    def __init__(self, error: str, *, messages: list[str] | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages or []
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error": self.error, **self.extra}
        if self.messages:
            body["errors"] = list(self.messages)
            body["response_metadata"] = {"messages": [f"[ERROR] {m}" for m in self.messages]}
        return body


def _truthy(value: Any) -> bool:
    """Form fields arrive as strings ("1", "true"), JSON ones as bools or ints."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return False


def _too_long(limit: int, pointer: str) -> str:
    return f"must be less than {limit + 1} characters [json-pointer:{pointer}]"


def _check_text_object(
    obj: Any,
    pointer: str,
    errors: list[str],
    *,
    limit: int,
    plain_only: bool = False,
) -> None:
    """Validate a composition text object the way Block Kit does (type, non-empty, length)."""
    if not isinstance(obj, dict):
        errors.append(f"must be an object [json-pointer:{pointer}]")
        return
    allowed = {"plain_text"} if plain_only else {"plain_text", "mrkdwn"}
    if obj.get("type") not in allowed:
        errors.append(f"must be one of {sorted(allowed)} [json-pointer:{pointer}/type]")
    text = obj.get("text")
    if not isinstance(text, str):
        errors.append(f"missing required field: text [json-pointer:{pointer}]")
    elif not text:
        errors.append(f"must be more than 0 characters [json-pointer:{pointer}/text]")
    elif len(text) > limit:
        errors.append(_too_long(limit, f"{pointer}/text"))


def _check_element(element: Any, pointer: str, errors: list[str]) -> None:
    """Validate the interactive-element limits that bite (action_id, button text/value)."""
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        errors.append(f"missing required field: type [json-pointer:{pointer}]")
        return
    action_id = element.get("action_id")
    if isinstance(action_id, str) and len(action_id) > MAX_ACTION_ID:
        errors.append(_too_long(MAX_ACTION_ID, f"{pointer}/action_id"))
    if element["type"] == "button":
        _check_text_object(
            element.get("text"), f"{pointer}/text", errors, limit=MAX_BUTTON_TEXT, plain_only=True
        )
        value = element.get("value")
        if isinstance(value, str) and len(value) > MAX_BUTTON_VALUE:
            errors.append(_too_long(MAX_BUTTON_VALUE, f"{pointer}/value"))


def validate_blocks(blocks: Any, *, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[str]:
    """Return Slack-style error strings for ``blocks`` (empty list when valid)."""
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"no more than {max_blocks} items allowed [json-pointer:/blocks]")
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        ptr = f"/blocks/{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(f"missing required field: type [json-pointer:{ptr}]")
            continue
        kind = block["type"]
        if kind not in BLOCK_TYPES:
            errors.append(f"unsupported type: {kind} [json-pointer:{ptr}/type]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str):
                errors.append(f"must be a string [json-pointer:{ptr}/block_id]")
            elif len(block_id) > MAX_BLOCK_ID:
                errors.append(_too_long(MAX_BLOCK_ID, f"{ptr}/block_id"))
            elif block_id in seen_ids:
                errors.append(f"duplicate block_id: {block_id} [json-pointer:{ptr}/block_id]")
            else:
                seen_ids.add(block_id)
        if kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if text is None and not fields:
                errors.append(f"must provide either text or fields [json-pointer:{ptr}]")
            if text is not None:
                _check_text_object(text, f"{ptr}/text", errors, limit=MAX_SECTION_TEXT)
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > 10:
                    errors.append(f"no more than 10 items allowed [json-pointer:{ptr}/fields]")
                else:
                    for j, f in enumerate(fields):
                        _check_text_object(f, f"{ptr}/fields/{j}", errors, limit=MAX_SECTION_FIELD)
            if "accessory" in block:
                _check_element(block["accessory"], f"{ptr}/accessory", errors)
        elif kind == "header":
            _check_text_object(
                block.get("text"), f"{ptr}/text", errors, limit=MAX_HEADER_TEXT, plain_only=True
            )
        elif kind in {"actions", "context"}:
            elements = block.get("elements")
            cap = 25 if kind == "actions" else 10
            if not isinstance(elements, list) or not elements:
                errors.append(f"missing required field: elements [json-pointer:{ptr}]")
            elif len(elements) > cap:
                errors.append(f"no more than {cap} items allowed [json-pointer:{ptr}/elements]")
            elif kind == "actions":
                for j, element in enumerate(elements):
                    _check_element(element, f"{ptr}/elements/{j}", errors)
        elif kind == "markdown":
            text = block.get("text")
            if not isinstance(text, str) or not text:
                errors.append(f"missing required field: text [json-pointer:{ptr}]")
            elif len(text) > MAX_MARKDOWN_BLOCK:
                errors.append(_too_long(MAX_MARKDOWN_BLOCK, f"{ptr}/text"))
    return errors


def _form_value(value: str | bytes | bytearray | FileField) -> str | bytes:
    """Form fields are strings; multipart file parts are read to bytes."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value.file.read()


def _parse_json_field(args: dict[str, Any], key: str) -> None:
    """Form-encoded callers send blocks/view/files as JSON strings; decode them in place."""
    value = args.get(key)
    if isinstance(value, str):
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            if key == "blocks":
                raise SlackError("invalid_blocks_format") from None
            if key == "attachments":
                raise SlackError("invalid_attachments") from None


class FakeSlack:
    """Fake Slack Web API server; state is public so tests can arrange and assert directly."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        app_token: str = DEFAULT_APP_TOKEN,
        team_id: str = TEAM_ID,
        team_domain: str = TEAM_DOMAIN,
        team_name: str = "Cosign Test",
        bot_user_id: str = BOT_USER_ID,
        bot_user_name: str = "cosign",
        bot_id: str = BOT_ID,
        app_id: str = APP_ID,
        strict_channels: bool = False,
    ) -> None:
        self.token = token
        self.app_token = app_token
        self.tokens: set[str] = {token}
        self.app_tokens: set[str] = {app_token}
        self.team_id = team_id
        self.team_domain = team_domain
        self.team_name = team_name
        self.bot_user_id = bot_user_id
        self.bot_user_name = bot_user_name
        self.bot_id = bot_id
        self.app_id = app_id
        #: When True, posting to a channel missing from ``channels`` is ``channel_not_found``.
        self.strict_channels = strict_channels

        self.calls: list[Call] = []
        self.users: dict[str, dict[str, Any]] = {
            bot_user_id: {
                "id": bot_user_id,
                "name": bot_user_name,
                "real_name": bot_user_name,
                "is_bot": True,
                "profile": {"bot_id": bot_id, "real_name": bot_user_name},
            }
        }
        self.channels: dict[str, dict[str, Any]] = {
            "C1": {"id": "C1", "name": "general", "is_member": True},
        }
        #: user id -> the bot's IM (D…) with that user, made once, on first use
        self.ims: dict[str, str] = {}
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted: dict[tuple[str, str], dict[str, Any]] = {}
        self.ephemeral: list[dict[str, Any]] = []
        self.files: dict[str, UploadedFile] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.socket_mode = FakeSocketMode(self)
        #: The bot scopes granted at install; None grants every scope (no manifest installed).
        self.scopes: set[str] | None = None
        #: ``features.app_home`` of the installed manifest; None when no manifest is installed.
        self.app_home: dict[str, Any] | None = None

        self._handlers: dict[str, Handler] = {
            "api.test": lambda args, call: {"ok": True, "args": args},
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.delete": self._chat_delete,
            "chat.getPermalink": self._chat_get_permalink,
            "users.info": self._users_info,
            "users.lookupByEmail": self._users_lookup_by_email,
            "conversations.info": self._conversations_info,
            "conversations.open": self._conversations_open,
            "conversations.join": self._conversations_join,
            "views.open": self._views_open,
            "views.push": self._views_open,
            "views.update": self._views_update,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
        }
        self._rate_limits: dict[str, deque[int]] = {}
        self._failures: dict[str, deque[str]] = {}
        self._response_urls: dict[str, tuple[str | None, str | None]] = {}
        self._used_triggers: set[str] = set()
        self._ts_counter = itertools.count(1)
        self._id_counter = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeSlack:
        """Bind 127.0.0.1 on a free port (loopback only: tests must never reach Slack)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/v1/{file_id}", self._handle_upload)
        app.router.add_post("/response_url/{token}", self._handle_response_url)
        app.router.add_get("/link/", self.socket_mode.handle_ws)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        """Close websockets first (else shutdown waits on them), then the server."""
        await self.socket_mode.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSlack is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` with no trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """Pass as ``AsyncWebClient(base_url=...)``; ends in ``/api/`` like Slack's."""
        return f"{self.base_url}/api/"

    # ------------------------------------------------------------------ test controls

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 + ``Retry-After`` (int s)."""
        self._rate_limits.setdefault(method, deque()).extend([int(retry_after)] * times)

    def fail(self, method: str, error: str = "channel_not_found", times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error": error}``."""
        self._failures.setdefault(method, deque()).extend([error] * times)

    def install(self, manifest: dict[str, Any]) -> None:
        """Install the app from its manifest: only its bot scopes and App Home settings hold."""
        self.scopes = set(manifest.get("oauth_config", {}).get("scopes", {}).get("bot", []))
        self.app_home = dict(manifest.get("features", {}).get("app_home") or {})

    def add_channel(
        self, channel_id: str, name: str = "", *, private: bool = False, member: bool = False
    ) -> None:
        """Declare a channel: public or private, with the bot in it or not."""
        self.channels[channel_id] = {
            "id": channel_id,
            "name": name or channel_id.lower(),
            "is_private": private,
            "is_member": member,
        }

    def invite_bot(self, channel_id: str) -> None:
        """A user's ``/invite @cosign``: the only way a bot gets into a private channel."""
        if channel_id not in self.channels:
            self.add_channel(channel_id, private=True)
        self.channels[channel_id]["is_member"] = True

    def dms_readable_by(self, user_id: str) -> list[dict[str, Any]]:
        """The bot's DMs the user can read in its App Home Messages tab.

        Since February 2021 the Messages tab is opt-in per app (slackapi/python-slack-sdk#1015):
        an app installed without ``features.app_home.messages_tab_enabled`` has no Messages tab,
        and chat.postMessage still answers ``ok`` (getsentry/eng-pipes#329: "Without messages
        tab, the app can't message users"). Here, such DMs are stored but nobody reads them.
        """
        if self.app_home is not None and not self.app_home.get("messages_tab_enabled"):
            return []
        im = self.ims.get(user_id)
        return self.messages_in(im) if im else []

    def im_of(self, user_id: str) -> str:
        """The bot's direct message conversation with a user, created on first use, then always
        the same one: conversations.open "opens or resumes" it (docs.slack.dev/reference/methods/
        conversations.open), and chat.postMessage with the user id as ``channel`` posts there
        (the app's DM with that user, shown in its App Home Messages tab). Its id is a real
        conversation id (``D`` and 8+ characters): files.completeUploadExternal accepts it."""
        if user_id not in self.ims:
            im = self._next_id("D")
            self.ims[user_id] = im
            self.channels[im] = {"id": im, "is_im": True, "user": user_id, "is_member": True}
        return self.ims[user_id]

    def add_method(self, method: str, handler: Handler) -> None:
        """Teach the fake another Web API method: ``handler(args, call) -> response dict``."""
        self._handlers[method] = handler

    def response_url(
        self, token: str | None = None, *, channel: str | None = None, message_ts: str | None = None
    ) -> str:
        """A response_url on this fake; bind a message for replace_original/delete_original."""
        token = token or uuid.uuid4().hex
        self._response_urls[token] = (channel, message_ts)
        return f"{self.base_url}/response_url/{token}"

    def calls_to(self, method: str) -> list[Call]:
        """All recorded calls of one method, oldest first."""
        return [c for c in self.calls if c.method == method]

    def clear_calls(self) -> None:
        """Forget recorded calls (state such as messages is kept)."""
        self.calls.clear()

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5) -> list[Call]:
        """Wait until ``count`` calls of ``method`` were recorded; returns them."""

        def enough() -> bool:
            return len(self.calls_to(method)) >= count

        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(enough), timeout)
        except TimeoutError:
            seen = [c.method for c in self.calls]
            raise TimeoutError(
                f"waited {timeout}s for {count} call(s) to {method}; calls seen: {seen}"
            ) from None
        return self.calls_to(method)

    def messages_in(self, channel: str) -> list[dict[str, Any]]:
        """Current messages of a channel, oldest first."""
        return [m for (c, _), m in sorted(self.messages.items()) if c == channel]

    def add_user(
        self,
        user_id: str,
        name: str,
        real_name: str = "",
        email: str = "",
        *,
        deleted: bool = False,
    ) -> None:
        """Shorthand for ``fake.users[user_id] = {...}``; ``deleted``: a deactivated account."""
        self.users[user_id] = {
            "id": user_id,
            "name": name,
            "real_name": real_name or name,
            "deleted": deleted,
            "profile": {"email": email, "real_name": real_name or name, "display_name": name},
        }

    # ------------------------------------------------------------------ plumbing

    def _next_ts(self) -> str:
        micros = 1_700_000_000_000_000 + 100 * next(self._ts_counter)
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._id_counter):08d}"

    async def _record(self, call: Call) -> None:
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()

    async def _read_args(self, request: web.Request) -> dict[str, Any]:
        """Merge query string, form and JSON bodies, as Slack accepts all three."""
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                raw = await request.read()
                try:
                    body = json.loads(raw) if raw else {}
                except json.JSONDecodeError:
                    raise SlackError("invalid_json") from None
                if not isinstance(body, dict):
                    raise SlackError("invalid_json")
                args.update(body)
            elif ctype in {"application/x-www-form-urlencoded", "multipart/form-data"}:
                form = await request.post()
                for key, value in form.items():
                    args[key] = _form_value(value)
        return args

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        call = Call(method, {}, dict(request.headers), time.monotonic(), path=request.path)
        extra_headers: dict[str, str] = {}
        try:
            call.args = await self._read_args(request)
            body = self._dispatch(method, call, extra_headers)
        except SlackError as e:
            body = e.body()
        if call.rate_limited:
            call.status = 429
        call.response = body
        await self._record(call)
        return web.json_response(body, status=call.status, headers=extra_headers)

    def _token_of(self, call: Call) -> str | None:
        auth = call.header("Authorization")
        if auth and auth.startswith("Bearer "):
            return auth[len("Bearer ") :].strip()
        token = call.args.pop("token", None)
        return token if isinstance(token, str) and token else None

    def _dispatch(self, method: str, call: Call, extra_headers: dict[str, str]) -> dict[str, Any]:
        handler = self._handlers.get(method)
        if handler is None:
            return {"ok": False, "error": "unknown_method", "req_method": method}
        token = self._token_of(call)
        if token is None:
            raise SlackError("not_authed")
        if method == "apps.connections.open":
            if token not in self.app_tokens:
                raise SlackError(
                    "not_allowed_token_type" if token in self.tokens else "invalid_auth"
                )
        elif token in self.app_tokens:
            raise SlackError("not_allowed_token_type")
        elif token not in self.tokens:
            raise SlackError("invalid_auth")
        limits = self._rate_limits.get(method)
        if limits:
            retry_after = limits.popleft()
            call.rate_limited = True
            extra_headers["Retry-After"] = str(retry_after)
            return {"ok": False, "error": "ratelimited"}
        failures = self._failures.get(method)
        if failures:
            raise SlackError(failures.popleft())
        self._check_scope(method)
        for key in ("blocks", "attachments", "view", "metadata"):
            _parse_json_field(call.args, key)
        return handler(call.args, call)

    def _check_message(self, args: dict[str, Any], call: Call, *, require_content: bool) -> None:
        """Slack's message limits, plus the no_text / link_names warnings tests assert on."""
        blocks = args.get("blocks")
        if blocks is not None:
            errors = validate_blocks(blocks)
            if errors:
                raise SlackError("invalid_blocks", messages=errors)
        text = args.get("text")
        if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
            raise SlackError("msg_too_long")
        has_text = isinstance(text, str) and text.strip() != ""
        markdown_text = args.get("markdown_text")
        has_text = has_text or (isinstance(markdown_text, str) and markdown_text.strip() != "")
        if not has_text:
            if blocks or args.get("attachments"):
                call.warnings.append("no_text")
            elif require_content:
                raise SlackError("no_text")
        if _truthy(args.get("link_names")):
            call.warnings.append("link_names")

    def _has_scope(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes

    def _check_scope(self, method: str) -> None:
        """``missing_scope`` (with ``needed``/``provided``) when the install lacks the scope."""
        needed = METHOD_SCOPES.get(method)
        if self.scopes is None or not needed or any(s in self.scopes for s in needed):
            return
        raise SlackError(
            "missing_scope", needed=",".join(needed), provided=",".join(sorted(self.scopes))
        )

    def _resolve_channel(self, channel: Any, *, method: str = "") -> str:
        """Where a message or file goes, if the bot may post there.

        A user id posts to the DM with that user. Slack's membership rules:
        - a private channel the bot is not in is invisible to it: ``channel_not_found``
          (slackapi/bolt-js#365: "a bot user needs to be a member of the private channel");
        - a public channel the bot is not in takes chat.postMessage only, and only with
          ``chat:write.public`` ("Send messages to channels your Slack app isn't a member of",
          docs.slack.dev/reference/scopes/chat.write.public); everything else, file uploads
          included, answers ``not_in_channel`` (chat.postMessage's documented error "Cannot post
          user messages to a channel they are not in"; files.completeUploadExternal answers the
          same, getnao/nao#1372, though its error list on docs.slack.dev names only
          ``invalid_channel`` / ``posting_to_channel_denied``).
        """
        if not isinstance(channel, str) or not channel:
            raise SlackError("channel_not_found")
        if channel[0] in "UW":
            if self.strict_channels and channel not in self.users:
                raise SlackError("channel_not_found")  # no such user: no DM to post in
            return self.im_of(channel)
        info = self.channels.get(channel)
        if info is None:
            if self.strict_channels and not channel.startswith("D"):
                raise SlackError("channel_not_found")
            return channel
        if info.get("is_archived"):
            raise SlackError("is_archived")
        if info.get("is_member") is False:
            if info.get("is_private"):
                raise SlackError("channel_not_found")
            if not (method == "chat.postMessage" and self._has_scope("chat:write.public")):
                raise SlackError("not_in_channel")
        return channel

    def _bot_message(self, args: dict[str, Any], channel: str, ts: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "ts": ts,
            "text": args.get("text") if isinstance(args.get("text"), str) else "",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
        }
        for key in ("blocks", "attachments", "thread_ts", "metadata", "reply_broadcast"):
            if args.get(key) is not None:
                message[key] = args[key]
        return message

    # ------------------------------------------------------------------ Web API methods

    def _auth_test(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        return {
            "ok": True,
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": self.bot_user_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        return {"ok": True, "url": self.socket_mode.url()}

    def _chat_post_message(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"), method="chat.postMessage")
        self._check_message(args, call, require_content=True)
        ts = self._next_ts()
        message = self._bot_message(args, channel, ts)
        self.messages[(channel, ts)] = message
        public = {k: v for k, v in message.items() if k != "channel"}
        return {"ok": True, "channel": channel, "ts": ts, "message": public}

    def _chat_update(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        channel, ts = args.get("channel"), args.get("ts")
        if not isinstance(channel, str) or not channel:
            raise SlackError("channel_not_found")
        key = (channel, ts if isinstance(ts, str) else "")
        if key not in self.messages:
            raise SlackError("message_not_found")
        self._check_message(args, call, require_content=False)
        message = self.messages[key]
        for field_name in ("text", "blocks", "attachments", "metadata"):
            if field_name in args:
                message[field_name] = args[field_name]
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {
            "ok": True,
            "channel": channel,
            "ts": key[1],
            "text": message.get("text", ""),
            "message": {k: v for k, v in message.items() if k != "channel"},
        }

    def _chat_post_ephemeral(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"), method="chat.postEphemeral")
        user = args.get("user")
        if not isinstance(user, str) or not user:
            raise SlackError("user_not_found")
        self._check_message(args, call, require_content=True)
        message_ts = self._next_ts()
        entry = self._bot_message(args, channel, message_ts)
        entry["user"] = user
        self.ephemeral.append(entry)
        return {"ok": True, "message_ts": message_ts}

    def _chat_delete(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        channel, ts = args.get("channel"), args.get("ts")
        key = (str(channel), str(ts))
        if key not in self.messages:
            raise SlackError("message_not_found")
        self.deleted[key] = self.messages.pop(key)
        return {"ok": True, "channel": channel, "ts": ts}

    def _chat_get_permalink(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        channel, ts = str(args.get("channel")), str(args.get("message_ts"))
        if (channel, ts) not in self.messages:
            raise SlackError("message_not_found")
        link = f"https://{self.team_domain}.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        return {"ok": True, "channel": channel, "permalink": link}

    def _user_record(self, user: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(json.dumps(user))
        record.setdefault("team_id", self.team_id)
        record.setdefault("deleted", False)
        record.setdefault("is_bot", False)
        # users.info documents is_email_confirmed on the user object; our accounts have confirmed
        record.setdefault("is_email_confirmed", True)
        record.setdefault("profile", {})
        return record

    def _users_info(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        if user is None:
            raise SlackError("user_not_found")
        return {"ok": True, "user": self._user_record(user)}

    def _users_lookup_by_email(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        email = str(args.get("email", "")).lower()
        for user in self.users.values():
            if str(user.get("profile", {}).get("email", "")).lower() == email and email:
                return {"ok": True, "user": self._user_record(user)}
        raise SlackError("users_not_found")

    def _conversations_info(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        channel_id = str(args.get("channel"))
        info = self.channels.get(channel_id)
        if info is None:
            raise SlackError("channel_not_found")
        channel = dict(info)
        channel.setdefault("id", channel_id)
        channel.setdefault("name", channel_id.lower())
        channel.setdefault("is_channel", channel_id.startswith("C"))
        channel.setdefault("is_private", False)
        channel.setdefault("is_im", channel_id.startswith("D"))
        channel.setdefault("is_archived", False)
        channel.setdefault("is_member", True)
        return {"ok": True, "channel": channel}

    def _conversations_open(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        users = str(args.get("users", ""))
        if not users:
            raise SlackError("users_list_not_supplied")
        listed = [u.strip() for u in users.split(",") if u.strip()]
        # A bot token opens a 1:1 DM with im:write, a group DM with mpim:write (each method's
        # "Scopes" and docs.slack.dev/reference/scopes/im.write): one scope does not stand in
        # for the other.
        needed = "im:write" if len(listed) == 1 else "mpim:write"
        if not self._has_scope(needed):
            assert self.scopes is not None
            raise SlackError("missing_scope", needed=needed, provided=",".join(sorted(self.scopes)))
        if len(listed) > 1:
            raise SlackError("method_not_supported_for_channel_type")  # group DMs: not modelled
        first = listed[0]
        if first not in self.users:
            raise SlackError("user_not_found")
        if self.users[first].get("deleted"):
            raise SlackError("user_disabled")  # documented: "A specified user has been disabled"
        existed = first in self.ims
        channel = {"id": self.im_of(first)}
        if existed:  # "resumes": the same conversation, flagged as already open
            return {"ok": True, "no_op": True, "already_open": True, "channel": channel}
        return {"ok": True, "channel": channel}

    def _conversations_join(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        """conversations.join (docs.slack.dev/reference/methods/conversations.join).

        Joins public channels only. A private channel the bot is not in is invisible to it
        (``channel_not_found``); a private channel it is in, or a DM, is "a type of conversation
        [that] cannot be used with this method" (``method_not_supported_for_channel_type``). An
        already joined channel answers ``ok`` with the warning ``already_in_channel``.
        """
        channel_id = args.get("channel")
        if not isinstance(channel_id, str) or not channel_id:
            raise SlackError("channel_not_found")
        if channel_id[0] in "DUW":
            raise SlackError("method_not_supported_for_channel_type")
        info = self.channels.get(channel_id)
        if info is None:
            if self.strict_channels:
                raise SlackError("channel_not_found")
            self.add_channel(channel_id)
            info = self.channels[channel_id]
        if info.get("is_private"):
            if info.get("is_member") is False:
                raise SlackError("channel_not_found")
            raise SlackError("method_not_supported_for_channel_type")
        if info.get("is_archived"):
            raise SlackError("is_archived")
        already = info.get("is_member") is not False
        info["is_member"] = True
        response: dict[str, Any] = {
            "ok": True,
            "channel": self._conversations_info({"channel": channel_id}, call)["channel"],
        }
        if already:
            response["warning"] = "already_in_channel"
            response["response_metadata"] = {"warnings": ["already_in_channel"]}
        return response

    def _check_view(self, view: Any) -> dict[str, Any]:
        """Modal limits that Slack reports as ``invalid_arguments``."""
        if not isinstance(view, dict):
            raise SlackError("invalid_arguments", messages=["missing required field: view"])
        errors: list[str] = []
        if view.get("type") not in {"modal", "home"}:
            errors.append("must be one of ['home', 'modal'] [json-pointer:/view/type]")
        if view.get("type") == "modal":
            for key in ("title", "submit", "close"):
                if key in view or key == "title":
                    _check_text_object(
                        view.get(key), f"/view/{key}", errors, limit=MAX_VIEW_TITLE, plain_only=True
                    )
        metadata = view.get("private_metadata")
        if isinstance(metadata, str) and len(metadata) > MAX_PRIVATE_METADATA:
            errors.append(_too_long(MAX_PRIVATE_METADATA, "/view/private_metadata"))
        errors += [
            e.replace("json-pointer:/blocks", "json-pointer:/view/blocks")
            for e in validate_blocks(view.get("blocks", []), max_blocks=MAX_VIEW_BLOCKS)
        ]
        if errors:
            raise SlackError("invalid_arguments", messages=errors)
        return view

    def _views_open(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        trigger_id = args.get("trigger_id") or args.get("interactivity_pointer")
        if not isinstance(trigger_id, str) or not trigger_id:
            raise SlackError("invalid_trigger_id")
        if trigger_id in self._used_triggers:
            raise SlackError("exchanged_trigger_id")
        view = self._check_view(args.get("view"))
        self._used_triggers.add(trigger_id)
        view_id = self._next_id("V")
        stored = dict(view)
        stored.update(
            {
                "id": view_id,
                "team_id": self.team_id,
                "app_id": self.app_id,
                "bot_id": self.bot_id,
                "state": {"values": {}},
                "hash": uuid.uuid4().hex,
                "root_view_id": view_id,
                "previous_view_id": None,
            }
        )
        self.views[view_id] = stored
        return {"ok": True, "view": stored}

    def _views_update(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        view_id = args.get("view_id")
        if not isinstance(view_id, str) or view_id not in self.views:
            raise SlackError("not_found")
        old = self.views[view_id]
        if args.get("hash") and args["hash"] != old["hash"]:
            raise SlackError("hash_conflict")
        stored = dict(self._check_view(args.get("view")))
        for key in ("id", "team_id", "app_id", "bot_id", "state", "root_view_id"):
            stored[key] = old[key]
        stored["hash"] = uuid.uuid4().hex
        self.views[view_id] = stored
        return {"ok": True, "view": stored}

    def _files_get_upload_url(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        filename = args.get("filename")
        length = args.get("length")
        if not isinstance(filename, str) or not filename:
            raise SlackError("invalid_arguments", messages=["missing required field: filename"])
        try:
            size = int(length)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise SlackError(
                "invalid_arguments", messages=["missing required field: length"]
            ) from None
        file_id = self._next_id("F")
        self.files[file_id] = UploadedFile(
            id=file_id,
            filename=filename,
            length=size,
            alt_txt=args.get("alt_txt"),
            snippet_type=args.get("snippet_type"),
        )
        return {
            "ok": True,
            "upload_url": f"{self.base_url}/upload/v1/{file_id}",
            "file_id": file_id,
        }

    def _files_complete_upload(self, args: dict[str, Any], call: Call) -> dict[str, Any]:
        _parse_json_field(args, "files")
        items = args.get("files")
        if not isinstance(items, list) or not items:
            raise SlackError("invalid_arguments", messages=["missing required field: files"])
        channels: list[str] = []
        if args.get("channel_id"):
            channel_id = str(args["channel_id"])
            if channel_id[0] not in CONVERSATION_ID_PREFIXES:
                raise SlackError(
                    "invalid_arguments",
                    messages=[
                        "input must match regex pattern: ^[CGDZ][A-Z0-9]{8,}$ "
                        "[json-pointer:/channel_id]"
                    ],
                )
            channels.append(channel_id)
        if args.get("channels"):
            channels += [c.strip() for c in str(args["channels"]).split(",") if c.strip()]
        initial_comment = args.get("initial_comment")
        thread_ts = args.get("thread_ts")
        if (initial_comment or thread_ts) and not channels:
            raise SlackError(
                "invalid_arguments",
                messages=["initial_comment and thread_ts need channel_id or channels"],
            )
        if thread_ts and len(channels) > 1:
            raise SlackError("invalid_arguments", messages=["thread_ts needs exactly one channel"])
        channels = [
            self._resolve_channel(c, method="files.completeUploadExternal") for c in channels
        ]
        uploads: list[UploadedFile] = []
        for item in items:
            file_id = item.get("id") if isinstance(item, dict) else None
            upload = self.files.get(str(file_id))
            if upload is None or not upload.uploaded:
                raise SlackError("file_not_found")
            uploads.append(upload)
        ts = self._next_ts() if channels else None
        results = []
        for item, upload in zip(items, uploads, strict=True):
            upload.title = item.get("title") or upload.filename
            upload.channels = channels
            upload.channel = channels[0] if channels else None
            upload.initial_comment = initial_comment
            upload.thread_ts = thread_ts
            upload.completed = True
            results.append(self._file_object(upload, ts))
        for channel in channels:
            message = self._bot_message(
                {"text": initial_comment or "", "thread_ts": thread_ts}, channel, str(ts)
            )
            message["files"] = results
            message["upload"] = True
            self.messages[(channel, str(ts))] = message
        return {"ok": True, "files": results}

    def _file_object(self, upload: UploadedFile, ts: str | None) -> dict[str, Any]:
        now = int(time.time())
        mimetype = mimetypes.guess_type(upload.filename)[0] or "text/plain"
        share = {"ts": ts, "team_id": self.team_id, "share_user_id": self.bot_user_id}
        return {
            "id": upload.id,
            "created": now,
            "timestamp": now,
            "name": upload.filename,
            "title": upload.title,
            # Slack detects the type from the name and content; the name is enough here.
            "mimetype": mimetype,
            "filetype": "pdf" if mimetype == "application/pdf" else "text",
            "user": self.bot_user_id,
            "size": len(upload.content),
            "url_private": f"{self.base_url}/files-pri/{upload.id}/{upload.filename}",
            "permalink": f"https://{self.team_domain}.slack.com/files/{self.bot_user_id}/{upload.id}",
            "channels": [c for c in upload.channels if c.startswith("C")],
            "groups": [c for c in upload.channels if c.startswith("G")],
            "ims": [c for c in upload.channels if c.startswith("D")],
            "shares": {"public": {c: [share] for c in upload.channels}} if upload.channels else {},
        }

    # ------------------------------------------------------------------ non-API endpoints

    async def _handle_upload(self, request: web.Request) -> web.Response:
        """The upload URL: takes the raw body (what slack-sdk sends) or a multipart ``file``."""
        file_id = request.match_info["file_id"]
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = form.get("file") or form.get("filename")
            value = b"" if part is None else _form_value(part)
            data = value.encode() if isinstance(value, str) else value
        else:
            data = await request.read()
        call = Call(
            "upload",
            {"file_id": file_id, "length": len(data)},
            dict(request.headers),
            time.monotonic(),
            path=request.path,
        )
        upload = self.files.get(file_id)
        if upload is None:
            call.status, call.response = 404, "file_not_found"
        else:
            upload.content = data
            upload.uploaded = True
            call.response = f"OK - {len(data)}"
        await self._record(call)
        return web.Response(status=call.status, text=str(call.response), content_type="text/plain")

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        """response_url POSTs; the effects of replace/delete_original apply to bound messages."""
        token = request.match_info["token"]
        call = Call("response_url", {}, dict(request.headers), time.monotonic(), path=request.path)
        limits = self._rate_limits.get("response_url")
        if limits:
            retry_after = limits.popleft()
            call.rate_limited, call.status, call.response = True, 429, "rate_limited"
            await self._record(call)
            return web.Response(
                status=429,
                text="rate_limited",
                content_type="text/plain",
                headers={"Retry-After": str(retry_after)},
            )
        try:
            call.args = await self._read_args(request)
            if isinstance(call.args.get("payload"), str):
                call.args = json.loads(call.args["payload"])
            for key in ("blocks", "attachments"):
                _parse_json_field(call.args, key)
            self._apply_response(token, call)
            call.response = "ok"
        except (SlackError, json.JSONDecodeError) as e:
            call.status = 400
            call.response = e.error if isinstance(e, SlackError) else "invalid_payload"
        await self._record(call)
        return web.Response(status=call.status, text=str(call.response), content_type="text/plain")

    def _apply_response(self, token: str, call: Call) -> None:
        args = call.args
        if self._failures.get("response_url"):
            raise SlackError(self._failures["response_url"].popleft())
        channel, message_ts = self._response_urls.get(token, (None, None))
        if _truthy(args.get("delete_original")):
            if channel and message_ts:
                self.deleted[(channel, message_ts)] = self.messages.pop((channel, message_ts), {})
            return
        self._check_message(args, call, require_content=True)
        if _truthy(args.get("replace_original")):
            key = (channel or "", message_ts or "")
            if key in self.messages:
                for field_name in ("text", "blocks", "attachments"):
                    if field_name in args:
                        self.messages[key][field_name] = args[field_name]
                self.messages[key]["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
            return
        if args.get("response_type") == "in_channel" and channel:
            ts = self._next_ts()
            self.messages[(channel, ts)] = self._bot_message(args, channel, ts)
            return
        entry = self._bot_message(args, channel or "", self._next_ts())
        entry["response_url_token"] = token
        self.ephemeral.append(entry)


class FakeSocketMode:
    """Socket Mode websocket on the FakeSlack server, speaking Slack's envelope protocol.

    Slack sends ``hello`` on connect, then envelopes ``{"envelope_id", "type", "payload",
    "accepts_response_payload", ...}``; the app acks each with ``{"envelope_id", "payload"?}``.
    """

    def __init__(self, fake: FakeSlack) -> None:
        self._fake = fake
        self.connections: list[web.WebSocketResponse] = []
        self.connect_count = 0
        self.received: list[dict[str, Any]] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []
        self._tickets: set[str] = set()
        self._changed = asyncio.Condition()

    def url(self) -> str:
        """Issue a ticket and the websocket URL ``apps.connections.open`` answers with."""
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return f"ws://127.0.0.1:{self._fake.port}/link/?ticket={ticket}&app_id={self._fake.app_id}"

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
        except TimeoutError:
            raise TimeoutError(f"Socket Mode: waited {timeout}s for {what}") from None

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") not in self._tickets:
            return web.Response(status=401, text="invalid_ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections.append(ws)
        self.connect_count += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self.connections),
                "debug_info": {
                    "host": "applink-fake",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self._fake.app_id},
            }
        )
        await self._notify()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except json.JSONDecodeError:
                    continue
                if isinstance(data, dict):
                    self.received.append(data)
                    if isinstance(data.get("envelope_id"), str):
                        self.acks[data["envelope_id"]] = data
                    await self._notify()
        finally:
            if ws in self.connections:
                self.connections.remove(ws)
            await self._notify()
        return ws

    async def wait_connected(self, count: int = 1, timeout: float = 5) -> None:
        """Wait for ``count`` connections in total since start (reconnects count too)."""
        await self._wait(
            lambda: self.connect_count >= count and bool(self.connections),
            timeout,
            f"{count} connection(s)",
        )

    async def send_envelope(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        envelope_id: str | None = None,
        accepts_response_payload: bool | None = None,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        timeout: float = 5,
    ) -> str:
        """Send an envelope to the newest connection (waiting for one); returns its id."""
        await self.wait_connected(timeout=timeout)
        envelope_id = envelope_id or str(uuid.uuid4())
        if accepts_response_payload is None:
            accepts_response_payload = type == "slash_commands" or (
                type == "interactive"
                and payload.get("type") in {"view_submission", "block_suggestion"}
            )
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if type == "events_api":
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = retry_reason or ""
        elif retry_attempt is not None:
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason or ""
        self.sent.append(envelope)
        await self.connections[-1].send_json(envelope)
        return envelope_id

    async def wait_ack(self, envelope_id: str, timeout: float = 5) -> dict[str, Any]:
        """The ack the app sent for ``envelope_id``: ``{"envelope_id", "payload"?}``."""
        await self._wait(lambda: envelope_id in self.acks, timeout, f"ack of {envelope_id}")
        return self.acks[envelope_id]

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the client to reconnect, as Slack does every few hours."""
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake"}}
        for ws in list(self.connections):
            await ws.send_json(message)

    async def close_all(self) -> None:
        """Drop every connection (the client's auto-reconnect will notice)."""
        for ws in list(self.connections):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


# ---------------------------------------------------------------------- requests to the bot


def sign_request(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack adds to every HTTP request: v0 HMAC-SHA256 of ``v0:{ts}:{body}``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json"
_event_ids = itertools.count(1)


def load_template(name: str) -> dict[str, Any]:
    """A fresh copy of a sample payload in tests/data/slack/ (shaped like Slack's docs)."""
    data: dict[str, Any] = json.loads((DATA_DIR / f"{name}.json").read_text())
    return data


def _trigger_id() -> str:
    return f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}"


def slash_command_payload(
    command: str = "/sign",
    text: str = "",
    user_id: str = "U1",
    user_name: str = "alice",
    channel_id: str = "C1",
    team_id: str = TEAM_ID,
    response_url: str = "https://hooks.slack.com/commands/T1/1/abc",
    trigger_id: str | None = None,
    *,
    channel_name: str = "general",
    team_domain: str = TEAM_DOMAIN,
    api_app_id: str = APP_ID,
) -> dict[str, str]:
    """Slash command fields as Slack sends them (all strings); also the Socket Mode payload."""
    fields = load_template("slash_command")
    fields.update(
        {
            "team_id": team_id,
            "team_domain": team_domain,
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id or _trigger_id(),
        }
    )
    return {k: str(v) for k, v in fields.items()}


def slash_command_body(
    command: str = "/sign",
    text: str = "",
    user_id: str = "U1",
    user_name: str = "alice",
    channel_id: str = "C1",
    team_id: str = TEAM_ID,
    response_url: str = "https://hooks.slack.com/commands/T1/1/abc",
    trigger_id: str | None = None,
    **extra: str,
) -> bytes:
    """application/x-www-form-urlencoded body of a slash command request."""
    fields = slash_command_payload(
        command, text, user_id, user_name, channel_id, team_id, response_url, trigger_id, **extra
    )
    return urlencode(fields).encode()


def block_action_payload(
    action_id: str,
    value: str = "",
    user_id: str = "U1",
    channel_id: str = "C1",
    message_ts: str | None = None,
    response_url: str = "https://hooks.slack.com/actions/T1/1/abc",
    trigger_id: str | None = None,
    block_id: str = "b1",
    *,
    user_name: str = "alice",
    team_id: str = TEAM_ID,
    channel_name: str = "general",
    message: dict[str, Any] | None = None,
    action_type: str = "button",
    state_values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A block_actions interaction (button click); ``message`` is the clicked message."""
    payload = load_template("block_actions")
    ts = message_ts or (message or {}).get("ts") or payload["container"]["message_ts"]
    payload["user"] = {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id}
    payload["api_app_id"] = APP_ID
    payload["team"] = {"id": team_id, "domain": TEAM_DOMAIN}
    payload["container"] = {
        "type": "message",
        "message_ts": ts,
        "channel_id": channel_id,
        "is_ephemeral": False,
    }
    payload["channel"] = {"id": channel_id, "name": channel_name}
    if message is not None:
        payload["message"] = {k: v for k, v in message.items() if k != "channel"}
    payload["message"]["ts"] = ts
    payload["state"] = {"values": state_values or {}}
    payload["response_url"] = response_url
    payload["trigger_id"] = trigger_id or _trigger_id()
    action = dict(payload["actions"][0])
    action.update(
        {
            "action_id": action_id,
            "block_id": block_id,
            "value": value,
            "type": action_type,
            "action_ts": f"{time.time():.6f}",
        }
    )
    payload["actions"] = [action]
    return payload


def _form_payload(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def block_action_body(
    action_id: str,
    value: str = "",
    user_id: str = "U1",
    channel_id: str = "C1",
    message_ts: str | None = None,
    response_url: str = "https://hooks.slack.com/actions/T1/1/abc",
    trigger_id: str | None = None,
    block_id: str = "b1",
    **extra: Any,
) -> bytes:
    """Form body ``payload=<json>`` of a block_actions request, as Slack POSTs it."""
    payload = block_action_payload(
        action_id,
        value,
        user_id,
        channel_id,
        message_ts,
        response_url,
        trigger_id,
        block_id,
        **extra,
    )
    return _form_payload(payload)


def view_submission_payload(
    callback_id: str,
    values: dict[str, dict[str, dict[str, Any]]] | None = None,
    user_id: str = "U1",
    *,
    view_id: str = "V00000001",
    private_metadata: str = "",
    trigger_id: str | None = None,
    team_id: str = TEAM_ID,
    user_name: str = "alice",
    blocks: list[dict[str, Any]] | None = None,
    title: str = "Co-sign",
    response_urls: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """A view_submission; ``values`` is ``{block_id: {action_id: {"type":..., "value":...}}}``."""
    return {
        "type": "view_submission",
        "team": {"id": team_id, "domain": TEAM_DOMAIN},
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": APP_ID,
        "token": "Shh_its_a_seekrit",
        "trigger_id": trigger_id or _trigger_id(),
        "view": {
            "id": view_id,
            "team_id": team_id,
            "type": "modal",
            "blocks": blocks or [],
            "private_metadata": private_metadata,
            "callback_id": callback_id,
            "state": {"values": values or {}},
            "hash": "156772938.1827394",
            "title": {"type": "plain_text", "text": title, "emoji": True},
            "clear_on_close": False,
            "notify_on_close": False,
            "close": None,
            "submit": {"type": "plain_text", "text": "Submit", "emoji": True},
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": APP_ID,
            "external_id": "",
            "app_installed_team_id": team_id,
            "bot_id": BOT_ID,
        },
        "response_urls": response_urls or [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def view_submission_body(callback_id: str, **kwargs: Any) -> bytes:
    """Form body ``payload=<json>`` of a view_submission request."""
    return _form_payload(view_submission_payload(callback_id, **kwargs))


def event_callback_payload(
    event: dict[str, Any],
    event_id: str | None = None,
    *,
    team_id: str = TEAM_ID,
    api_app_id: str = APP_ID,
    bot_user_id: str = BOT_USER_ID,
    event_time: int | None = None,
) -> dict[str, Any]:
    """An Events API event_callback wrapping ``event``; event ids are unique per call."""
    payload = load_template("event_callback")
    payload.update(
        {
            "team_id": team_id,
            "api_app_id": api_app_id,
            "event": event,
            "event_id": event_id or f"Ev{next(_event_ids):08d}",
            "event_time": event_time or int(time.time()),
        }
    )
    payload["authorizations"][0].update({"team_id": team_id, "user_id": bot_user_id})
    return payload


def event_callback_body(event: dict[str, Any], event_id: str | None = None, **kwargs: Any) -> bytes:
    """JSON body of an Events API request."""
    return json.dumps(event_callback_payload(event, event_id, **kwargs)).encode()
