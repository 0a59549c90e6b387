"""Matrix login: an access token from the environment, or a password whose token is kept.

With ``MATRIX_PASSWORD`` the token the homeserver hands out is written to
``<store_path>/session.json`` (mode 0600) and reused on every start, so the bot keeps one device —
and one set of end-to-end encryption keys — across restarts. With ``MATRIX_ACCESS_TOKEN`` the
device is the token's own (asked with ``whoami``), whatever ``device_id`` says.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nio import AsyncClient, LoginResponse, WhoamiResponse

from bot.config import ConfigError

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"
_AUTH_ERRORS = {"M_UNKNOWN_TOKEN", "M_FORBIDDEN", "M_USER_DEACTIVATED", "M_INVALID_USERNAME"}


class HomeserverUnavailable(Exception):
    """The homeserver did not answer (or answered 5xx): worth retrying later."""


@dataclass(frozen=True)
class Credentials:
    access_token: str | None = None
    password: str | None = None
    pickle_key: str | None = None

    def __repr__(self) -> str:  # never print a secret by accident
        return (
            f"Credentials(access_token={'***' if self.access_token else None}, "
            f"password={'***' if self.password else None}, "
            f"pickle_key={'***' if self.pickle_key else None})"
        )


def prepare_store(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    try:
        path.chmod(0o700)
    except OSError:  # not ours to change (e.g. a mounted volume): keep going
        log.warning("could not restrict permissions of %s", path)
    return path


def load_session(store: Path, *, homeserver: str, user_id: str) -> dict[str, str] | None:
    """The saved login for this account on this homeserver, if any."""
    path = store / SESSION_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log.warning("ignoring unreadable %s", path)
        return None
    if not isinstance(data, dict):
        return None
    if data.get("user_id") != user_id or data.get("homeserver") != homeserver:
        log.warning("%s belongs to another account or homeserver; logging in again", path)
        return None
    if not all(isinstance(data.get(k), str) for k in ("device_id", "access_token")):
        return None
    return {k: str(v) for k, v in data.items()}


def save_session(store: Path, data: dict[str, str]) -> None:
    """Write session.json atomically, readable by the owner only (0600) from the first byte."""
    write_private(store / SESSION_FILE, json.dumps(data))


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, mode 0600 from the first byte (never a moment
    when another user could read it, nor a half-written file after a crash)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _error_code(response: Any) -> str:
    return str(getattr(response, "status_code", "") or "")


def _is_auth_error(response: Any) -> bool:
    code = _error_code(response)
    status = getattr(getattr(response, "transport_response", None), "status", None)
    return code in _AUTH_ERRORS or status in (401, 403)


async def _whoami(client: AsyncClient, token: str) -> WhoamiResponse | None:
    """The token's account and device; None if the homeserver rejects the token."""
    client.access_token = token
    response = await client.whoami()
    if isinstance(response, WhoamiResponse):
        return response
    if _is_auth_error(response):
        return None
    raise HomeserverUnavailable(f"whoami failed: {response}")


async def login(
    client: AsyncClient, *, user_id: str, device_id: str, store: Path, credentials: Credentials
) -> tuple[str, str]:
    """Log the client in (loading its crypto store); returns (user id, device id).

    Raises ConfigError for credentials the homeserver refuses, HomeserverUnavailable when it
    cannot be reached (the caller retries), and lets transport exceptions through.
    """
    if credentials.access_token:
        who = await _whoami(client, credentials.access_token)
        if who is None:
            raise ConfigError("MATRIX_ACCESS_TOKEN: the homeserver rejected the access token")
        if who.user_id != user_id:
            raise ConfigError(
                f"matrix.user_id: is {user_id} but MATRIX_ACCESS_TOKEN belongs to {who.user_id}"
            )
        device = who.device_id or device_id
        if device != device_id:
            log.warning(
                "matrix.device_id is %s but the access token belongs to device %s; using %s",
                device_id,
                device,
                device,
            )
        client.restore_login(who.user_id, device, credentials.access_token)
        return who.user_id, device

    if not credentials.password:
        raise ConfigError("matrix: set MATRIX_ACCESS_TOKEN or MATRIX_PASSWORD in the environment")

    saved = load_session(store, homeserver=client.homeserver, user_id=user_id)
    if saved is not None:
        who = await _whoami(client, saved["access_token"])
        if who is not None and who.user_id == user_id:
            device = who.device_id or saved["device_id"]
            client.restore_login(user_id, device, saved["access_token"])
            log.info("matrix: reusing the saved login of device %s", device)
            return user_id, device
        log.warning("matrix: the saved access token was rejected; logging in with the password")
        device_id = saved["device_id"]  # same device, so the crypto store stays valid

    client.access_token = ""
    client.user = user_id
    client.device_id = device_id
    response = await client.login(credentials.password, device_name="cosign")
    if not isinstance(response, LoginResponse):
        if _is_auth_error(response):
            raise ConfigError(f"MATRIX_PASSWORD: login as {user_id} refused ({response})")
        raise HomeserverUnavailable(f"login failed: {response}")
    save_session(
        store,
        {
            "homeserver": client.homeserver,
            "user_id": response.user_id,
            "device_id": response.device_id,
            "access_token": response.access_token,
        },
    )
    log.info(
        "matrix: logged in as %s, device %s (token saved)", response.user_id, response.device_id
    )
    return response.user_id, response.device_id
