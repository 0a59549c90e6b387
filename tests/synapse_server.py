"""A real Synapse homeserver, run as a subprocess on loopback, for integration tests.

Why: fakes of the Matrix client-server API drift from reality (sync semantics, E2EE key
endpoints, rate limiting). Synapse from PyPI starts in a few seconds, so tests use the real one.

Import this module as ``synapse_server`` (``tests/`` has no ``__init__.py``; pytest's default
"prepend" import mode puts ``tests/`` on ``sys.path`` before importing ``tests/conftest.py`` and
the test modules). In ``tests/conftest.py``::

    from synapse_server import synapse, synapse_default_limits  # noqa: F401

All helpers are synchronous (stdlib ``urllib``, proxies bypassed, loopback only) so they do not
depend on the code under test or on an event loop. A loopback call takes milliseconds, so async
tests may call them directly; but anything that waits for the code under test running in the same
event loop must not block it: use ``await server.wait_for_event_async(...)`` (or wrap any helper
in ``asyncio.to_thread``). ``start``/``stop``/``restart``/``kill`` block for seconds: in async
tests call them via ``asyncio.to_thread``.

PYTEST_DONT_REWRITE: no asserts here; avoids "already imported" warnings when a test module
both imports this module and lists it in ``pytest_plugins``.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import hashlib
import hmac
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "MatrixHTTPError",
    "RegisteredUser",
    "SynapseServer",
    "synapse",
    "synapse_default_limits",
    "unique_localpart",
]

JsonDict = dict[str, Any]

# Far above anything a test does, so only tests that ask for limits ever hit them.
_HIGH: dict[str, float] = {"per_second": 10_000, "burst_count": 100_000}

# Every client-facing rc_* option of Synapse 1.163 (synapse/config/ratelimiting.py), except
# rc_message which is handled separately. rc_federation / remote media downloads are irrelevant
# without federation.
_RAISED_LIMITS: JsonDict = {
    "rc_registration": _HIGH,
    "rc_registration_token_validity": _HIGH,
    "rc_login": {"address": _HIGH, "account": _HIGH, "failed_attempts": _HIGH},
    "rc_admin_redaction": _HIGH,
    "rc_joins": {"local": _HIGH, "remote": _HIGH},
    "rc_joins_per_room": _HIGH,
    "rc_key_requests": _HIGH,
    "rc_3pid_validation": _HIGH,
    "rc_invites": {"per_room": _HIGH, "per_user": _HIGH, "per_issuer": _HIGH},
    "rc_third_party_invite": _HIGH,
    "rc_media_create": _HIGH,
    "rc_presence": {"per_user": _HIGH},
    "rc_delayed_event_mgmt": _HIGH,
    "rc_room_creation": _HIGH,
    "rc_reports": _HIGH,
    "rc_user_directory": _HIGH,
    "rc_profile": _HIGH,
}

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 15.0
_counter = itertools.count()


class MatrixHTTPError(Exception):
    """A non-2xx answer from the homeserver, keeping errcode and retry_after_ms for asserts."""

    def __init__(self, status: int, body: JsonDict, retry_after_header: str | None = None):
        self.status = status
        self.body = body
        self.errcode: str | None = body.get("errcode")
        self.error: str | None = body.get("error")
        retry = body.get("retry_after_ms")
        if retry is None and retry_after_header and retry_after_header.isdigit():
            retry = int(retry_after_header) * 1000
        self.retry_after_ms: int | None = retry
        super().__init__(f"HTTP {status} {self.errcode}: {self.error}")


@dataclass(frozen=True)
class RegisteredUser:
    """Credentials of a user registered through the shared-secret admin API."""

    user_id: str
    password: str
    access_token: str
    device_id: str

    @property
    def localpart(self) -> str:
        return self.user_id[1:].split(":", 1)[0]


def unique_localpart(prefix: str = "user") -> str:
    """A localpart unique across tests and sessions (the session server outlives tests)."""
    return f"{prefix.lower()}-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


# Never use proxies from the environment: all traffic must stay on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SynapseServer:
    """One Synapse process with its own directory, port, SQLite database and config.

    The config is written directly as JSON (valid YAML) plus a freshly made ed25519 signing key:
    ``--generate-config`` costs ~3 s of imports for nothing.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        server_name: str = "localhost",
        default_rate_limits: bool = False,
        port: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.server_name = server_name
        self.default_rate_limits = default_rate_limits
        self.port = port or _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.directory / "homeserver.yaml"
        self.log_path = self.directory / "homeserver.log"
        # Python tracebacks before logging is configured (e.g. config errors) land here.
        self.stdout_path = self.directory / "synapse.stdout.log"
        self.registration_shared_secret = secrets.token_urlsafe(32)
        self.last_start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False
        self._write_config()

    # ----------------------------------------------------------------- process control

    def _write_config(self) -> None:
        d = self.directory
        key_path = d / "signing.key"
        if not key_path.exists():
            seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
            key_path.write_text(f"ed25519 a_{secrets.token_hex(2)} {seed}\n")
        log_config = {
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "plain",
                    "filename": str(self.log_path),
                    "encoding": "utf8",
                }
            },
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }
        (d / "log.config").write_text(json.dumps(log_config, indent=1))
        config: JsonDict = {
            "server_name": self.server_name,
            "public_baseurl": self.base_url + "/",
            "pid_file": str(d / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    # The admin API (/_synapse/admin) is served by the "client" resource.
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(d / "homeserver.db")}},
            "log_config": str(d / "log.config"),
            "media_store_path": str(d / "media_store"),
            "signing_key_path": str(key_path),
            "registration_shared_secret": self.registration_shared_secret,
            "macaroon_secret_key": secrets.token_urlsafe(32),
            "form_secret": secrets.token_urlsafe(32),
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_registration": False,
            "presence": {"enabled": False},
            "url_preview_enabled": False,
            # Password hashing at the default 12 rounds costs ~0.2 s per register/login.
            "bcrypt_rounds": 4,
            # Identical initial /syncs would otherwise get a 2-minute-old cached answer.
            "caches": {"sync_response_cache_duration": 0},
            **_RAISED_LIMITS,
        }
        if not self.default_rate_limits:
            config["rc_message"] = _HIGH
        self.config_path.write_text(json.dumps(config, indent=1))

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = _START_TIMEOUT) -> float:
        """Start Synapse and wait until it answers /versions; returns seconds it took."""
        if self.is_running:
            return 0.0
        began = time.monotonic()
        env = dict(os.environ, no_proxy="*", NO_PROXY="*")
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
            env.pop(var, None)
        with open(self.stdout_path, "ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if not self._atexit_registered:
            atexit.register(self.stop)  # no orphaned Synapse if a session aborts
            self._atexit_registered = True
        deadline = began + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"Synapse exited with code {code} during start-up\n{self.log_tail()}"
                )
            try:
                self.request("GET", "/_matrix/client/versions", timeout=2)
                break
            except (OSError, MatrixHTTPError):
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(
                        f"Synapse did not answer within {timeout:.0f} s\n{self.log_tail()}"
                    ) from None
                time.sleep(0.1)
        self.last_start_seconds = time.monotonic() - began
        return self.last_start_seconds

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """SIGTERM (Synapse shuts down cleanly, flushing SQLite), then SIGKILL after timeout."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: the homeserver vanishes without a clean shutdown (crash tests)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> float:
        """Stop and start again with the same data, port and config; returns start seconds."""
        self.stop()
        return self.start()

    def ensure_running(self) -> None:
        """Start again if a test stopped or killed the shared server and failed before restart."""
        if not self.is_running:
            self.start()

    def rss_bytes(self) -> int | None:
        """Resident memory of the Synapse process (Linux /proc), for resource checks."""
        if not self.is_running or self.pid is None:
            return None
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None

    def log_tail(self, lines: int = 40) -> str:
        """The end of Synapse's log and stdout, for failure messages."""
        parts = []
        for path in (self.stdout_path, self.log_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def __enter__(self) -> SynapseServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- raw HTTP

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> JsonDict:
        """One JSON request to this server; raises MatrixHTTPError on non-2xx answers."""
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raw_err = err.read()
            try:
                parsed = json.loads(raw_err)
            except ValueError:
                parsed = {"error": raw_err.decode(errors="replace")}
            raise MatrixHTTPError(err.code, parsed, err.headers.get("Retry-After")) from None
        return json.loads(raw) if raw else {}

    # ----------------------------------------------------------------- users

    def register_user(
        self,
        localpart: str,
        password: str | None = None,
        *,
        admin: bool = False,
        displayname: str | None = None,
    ) -> RegisteredUser:
        """Register via /_synapse/admin/v1/register (shared secret), which also logs in."""
        password = password or secrets.token_urlsafe(16)
        path = "/_synapse/admin/v1/register"
        nonce = self.request("GET", path)["nonce"]
        mac = hmac.new(self.registration_shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode()]))
        mac.update(b"\x00admin" if admin else b"\x00notadmin")
        body: JsonDict = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        if displayname is not None:
            body["displayname"] = displayname
        resp = self.request("POST", path, body=body)
        return RegisteredUser(resp["user_id"], password, resp["access_token"], resp["device_id"])

    def login(self, user_id: str, password: str, device_id: str | None = None) -> RegisteredUser:
        """Password login, e.g. for a second device of the same user."""
        body: JsonDict = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user_id},
            "password": password,
        }
        if device_id:
            body["device_id"] = device_id
        resp = self.request("POST", "/_matrix/client/v3/login", body=body)
        return RegisteredUser(resp["user_id"], password, resp["access_token"], resp["device_id"])

    # ----------------------------------------------------------------- rooms

    def create_room(
        self,
        token: str,
        name: str | None = None,
        invite: list[str] | None = None,
        *,
        encrypted: bool = False,
        preset: str = "private_chat",
        is_direct: bool = False,
    ) -> str:
        """Create a room (optionally with m.megolm encryption); returns the room id."""
        body: JsonDict = {"preset": preset, "invite": list(invite or []), "is_direct": is_direct}
        if name is not None:
            body["name"] = name
        if encrypted:
            body["initial_state"] = [
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ]
        return str(
            self.request("POST", "/_matrix/client/v3/createRoom", token=token, body=body)["room_id"]
        )

    def invite(self, token: str, room_id: str, user_id: str) -> None:
        self.request(
            "POST",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/invite",
            token=token,
            body={"user_id": user_id},
        )

    def join(self, token: str, room_id: str) -> str:
        """Join by room id or alias; returns the room id."""
        resp = self.request("POST", f"/_matrix/client/v3/join/{_q(room_id)}", token=token, body={})
        return str(resp["room_id"])

    def leave(self, token: str, room_id: str) -> None:
        self.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/leave", token=token, body={})

    def send_event(
        self, token: str, room_id: str, event_type: str, content: Mapping[str, Any]
    ) -> str:
        """Send any (unencrypted) room event; returns its event id. 429 -> MatrixHTTPError."""
        txn = f"h{time.time_ns()}{next(_counter)}"
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/send/{_q(event_type)}/{txn}"
        return str(self.request("PUT", path, token=token, body=dict(content))["event_id"])

    def send_text(
        self,
        token: str,
        room_id: str,
        body: str,
        msgtype: str = "m.text",
        extra_content: Mapping[str, Any] | None = None,
    ) -> str:
        """Send an m.room.message in cleartext; returns the event id."""
        content: JsonDict = {"msgtype": msgtype, "body": body, **(extra_content or {})}
        return self.send_event(token, room_id, "m.room.message", content)

    def send_state(
        self,
        token: str,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        state_key: str = "",
    ) -> str:
        """Set a state event (power levels, name, ...); returns the event id."""
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}"
        return str(self.request("PUT", path, token=token, body=dict(content))["event_id"])

    def messages(self, token: str, room_id: str, limit: int = 100) -> list[JsonDict]:
        """The room's latest `limit` events (state events included), OLDEST FIRST."""
        resp = self.request(
            "GET",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/messages",
            token=token,
            query={"dir": "b", "limit": str(limit)},
        )
        return list(reversed(resp.get("chunk", [])))

    def wait_for_event(
        self,
        token: str,
        room_id: str,
        predicate: Callable[[JsonDict], bool],
        timeout: float = 10.0,
        history: int = 50,
    ) -> JsonDict:
        """First timeline event matching `predicate`, via long-polling /sync (no busy loop).

        The predicate also sees the last `history` events already in the room (so a reply that
        arrived before this call is found): make it specific (sender, body, event id...). Events
        carry "room_id". The token's user must be joined. Encrypted events stay encrypted.
        """
        sync_filter = {
            "presence": {"types": []},
            "account_data": {"types": []},
            "room": {
                "rooms": [room_id],
                "timeline": {"limit": history},
                "state": {"types": []},
                "ephemeral": {"types": []},
                "account_data": {"types": []},
            },
        }
        deadline = time.monotonic() + timeout
        since: str | None = None
        while True:
            remaining = deadline - time.monotonic()
            query = {"filter": json.dumps(sync_filter, separators=(",", ":"))}
            if since is not None:
                if remaining <= 0:
                    raise TimeoutError(f"no matching event in {room_id} within {timeout} s")
                query["since"] = since
                query["timeout"] = str(int(min(remaining, 5.0) * 1000))
            resp = self.request(
                "GET", "/_matrix/client/v3/sync", token=token, query=query, timeout=30
            )
            since = resp["next_batch"]
            room = resp.get("rooms", {}).get("join", {}).get(room_id, {})
            for event in room.get("timeline", {}).get("events", []):
                event.setdefault("room_id", room_id)
                if predicate(event):
                    return event

    async def wait_for_event_async(
        self,
        token: str,
        room_id: str,
        predicate: Callable[[JsonDict], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - enforced in the worker thread, same API
        history: int = 50,
    ) -> JsonDict:
        """wait_for_event in a thread, so the code under test keeps running in this loop."""
        return await asyncio.to_thread(
            self.wait_for_event, token, room_id, predicate, timeout, history
        )

    def override_ratelimit(
        self, admin_token: str, user_id: str, messages_per_second: int = 0, burst_count: int = 0
    ) -> None:
        """Admin API per-user rc_message override; 0/0 exempts the user from all limiters."""
        self.request(
            "POST",
            f"/_synapse/admin/v1/users/{_q(user_id)}/override_ratelimit",
            token=admin_token,
            body={"messages_per_second": messages_per_second, "burst_count": burst_count},
        )


# --------------------------------------------------------------------- pytest fixtures


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    """The shared homeserver, every rc_* limit raised. Tests that stop/kill it must restart it."""
    server = SynapseServer(tmp_path_factory.mktemp("synapse"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def synapse_default_limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    """A second homeserver with Synapse's default rc_message (0.2/s, burst 10), started lazily."""
    server = SynapseServer(tmp_path_factory.mktemp("synapse-limits"), default_rate_limits=True)
    server.start()
    yield server
    server.stop()
