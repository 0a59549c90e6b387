"""Cross-signing of the bot's device by its own account (DESIGN.md rule 10).

Why: since MSC4153 (Element, April 2026) clients neither send to nor accept messages from a device
its owner has not cross-signed, and matrix-nio has no cross-signing. So at every start the bot
makes sure that its account has cross-signing keys (master, self-signing, user-signing; Ed25519,
the master key signing the other two) and that its device is signed by the self-signing key.

- Keys are created once. The upload (``/keys/device_signing/upload``) may need User-Interactive
  Auth; it is answered with ``m.login.password`` when ``MATRIX_PASSWORD`` is set. Synapse lets the
  *first* upload through without UIA (MSC3967); without a password and a homeserver that insists,
  the bot logs what to do and carries on.
- The private keys (32-byte seeds) are kept in ``<store_path>/cross_signing.json`` (mode 0600),
  encrypted with AES-256-GCM under a key derived from ``MATRIX_PICKLE_KEY`` with scrypt.
- The device signature is uploaded (``/keys/signatures/upload``) only when ``/keys/query`` does not
  already show the device signed by the account's current self-signing key: a restart uploads
  nothing.
- If the account has keys whose private halves the store lacks (store lost, keys made by another
  client), the device cannot be signed: an error is logged, and the keys are replaced only when
  ``MATRIX_PASSWORD`` is set (the bot's identity then changes for everyone who verified it).

Signing follows the spec's "Signing JSON": the canonical JSON of the object without ``signatures``
and ``unsigned``; key ids are ``ed25519:<unpadded base64 public key>`` for cross-signing keys and
``ed25519:<device_id>`` for devices.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from nio import AsyncClient, KeysUploadResponse

from bot.platforms.matrix.send import TRANSPORT_ERRORS
from bot.platforms.matrix.session import write_private

log = logging.getLogger(__name__)

KEY_FILE = "cross_signing.json"
FORMAT = "cosign-cross-signing"
VERSION = 1
#: scrypt cost: 32 MiB and about 0.1 s, paid only when a key is used or saved (not every start)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
ATTEMPTS = 3

QUERY_PATH = "/_matrix/client/v3/keys/query"
DEVICE_SIGNING_PATH = "/_matrix/client/v3/keys/device_signing/upload"
SIGNATURES_PATH = "/_matrix/client/v3/keys/signatures/upload"

JsonDict = dict[str, Any]


class Status(StrEnum):
    """What the start-up check found or did (tests and the log read it)."""

    SKIPPED = "skipped"  # encryption off: the bot has no device keys to sign
    ALREADY_SIGNED = "already signed"  # nothing uploaded
    SIGNED = "signed"  # existing keys of ours signed the device
    CREATED = "created"  # new keys uploaded, device signed
    REPLACED = "replaced"  # the account's keys were not ours: replaced (password given)
    NEEDS_PASSWORD = "needs password"  # no keys, and the homeserver wants UIA we cannot answer
    KEYS_UNAVAILABLE = "keys unavailable"  # keys exist, private halves missing, no password
    FAILED = "failed"


@dataclass
class Outcome:
    status: Status
    #: requests made to the two upload endpoints (0 after a restart with nothing to do)
    uploads: int = 0


class CrossSigningError(Exception):
    """A refusal that retrying will not fix; the message says what to do."""


class _Transient(Exception):
    """The homeserver is unreachable, busy or rate-limiting: worth another try."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


RETRYABLE: tuple[type[BaseException], ...] = (_Transient, *TRANSPORT_ERRORS)


# --- encoding and signing ------------------------------------------------------------------


def b64encode(data: bytes) -> str:
    """Unpadded standard base64, as Matrix writes keys and signatures."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def canonical_json(value: Any) -> bytes:
    """Matrix canonical JSON: sorted keys, no whitespace, UTF-8, no floats' NaN."""
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    ).encode("utf-8")


def signable(obj: JsonDict) -> bytes:
    """The bytes a Matrix signature covers: the object without signatures and unsigned."""
    return canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})


def verify(obj: JsonDict, user_id: str, key_id: str, public_key: str) -> bool:
    """Whether ``obj`` carries a valid signature by ``key_id`` (ed25519 ``public_key``)."""
    signature = (obj.get("signatures") or {}).get(user_id, {}).get(key_id)
    if not isinstance(signature, str):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(b64decode(public_key)).verify(
            b64decode(signature), signable(obj)
        )
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key from its 32-byte seed (the form Matrix clients store and export)."""

    seed: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(secrets.token_bytes(32))

    @property
    def public(self) -> str:
        private = Ed25519PrivateKey.from_private_bytes(self.seed)
        return b64encode(private.public_key().public_bytes_raw())

    @property
    def key_id(self) -> str:
        return f"ed25519:{self.public}"

    def sign(self, obj: JsonDict, user_id: str) -> JsonDict:
        """A copy of ``obj`` with this key's signature added to the ones it has."""
        private = Ed25519PrivateKey.from_private_bytes(self.seed)
        signature = b64encode(private.sign(signable(obj)))
        signed = {k: v for k, v in obj.items() if k != "unsigned"}
        signatures = {u: dict(s) for u, s in (obj.get("signatures") or {}).items()}
        signatures.setdefault(user_id, {})[self.key_id] = signature
        signed["signatures"] = signatures
        return signed


@dataclass(frozen=True)
class CrossSigningKeys:
    master: SigningKey
    self_signing: SigningKey
    user_signing: SigningKey

    @classmethod
    def generate(cls) -> CrossSigningKeys:
        return cls(SigningKey.generate(), SigningKey.generate(), SigningKey.generate())

    def _key(self, user_id: str, usage: str, key: SigningKey) -> JsonDict:
        return {"user_id": user_id, "usage": [usage], "keys": {key.key_id: key.public}}

    def upload_body(self, user_id: str) -> JsonDict:
        """The three public keys, the master key signing the other two."""
        return {
            "master_key": self._key(user_id, "master", self.master),
            "self_signing_key": self.master.sign(
                self._key(user_id, "self_signing", self.self_signing), user_id
            ),
            "user_signing_key": self.master.sign(
                self._key(user_id, "user_signing", self.user_signing), user_id
            ),
        }

    def publics(self) -> dict[str, str]:
        return {
            "master": self.master.public,
            "self_signing": self.self_signing.public,
            "user_signing": self.user_signing.public,
        }


# --- the encrypted key file ------------------------------------------------------------------


class KeyFileError(Exception):
    """The key file exists but cannot be used (wrong pickle key, damaged, another account)."""


def _derive(pickle_key: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(pickle_key.encode("utf-8"))


def _header(user_id: str, publics: dict[str, str]) -> JsonDict:
    return {"format": FORMAT, "version": VERSION, "user_id": user_id, "public": publics}


def save_keys(store: Path, user_id: str, keys: CrossSigningKeys, pickle_key: str) -> Path:
    """Write the seeds encrypted (AES-256-GCM, scrypt-derived key; the header is authenticated
    too), mode 0600; the public keys stay readable for diagnosis."""
    header = _header(user_id, keys.publics())
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    seeds = {
        "master": b64encode(keys.master.seed),
        "self_signing": b64encode(keys.self_signing.seed),
        "user_signing": b64encode(keys.user_signing.seed),
    }
    key = _derive(pickle_key, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    ciphertext = AESGCM(key).encrypt(nonce, canonical_json(seeds), canonical_json(header))
    document = {
        **header,
        "kdf": {
            "name": "scrypt",
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": b64encode(salt),
        },
        "cipher": "AES-256-GCM",
        "nonce": b64encode(nonce),
        "ciphertext": b64encode(ciphertext),
    }
    path = store / KEY_FILE
    write_private(path, json.dumps(document, indent=1))
    return path


def load_keys(store: Path, user_id: str, pickle_key: str) -> CrossSigningKeys | None:
    """The stored keys; None if there is no file; KeyFileError if it cannot be used."""
    path = store / KEY_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path} is unreadable ({exc.__class__.__name__})") from None
    try:
        if document.get("format") != FORMAT or document.get("version") != VERSION:
            raise KeyFileError(f"{path} is not a cosign key file of version {VERSION}")
        if document.get("user_id") != user_id:
            raise KeyFileError(f"{path} holds the keys of {document.get('user_id')}")
        kdf = document["kdf"]
        key = _derive(
            pickle_key, b64decode(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        )
        header = _header(user_id, document["public"])
        plain = AESGCM(key).decrypt(
            b64decode(document["nonce"]), b64decode(document["ciphertext"]), canonical_json(header)
        )
        seeds = json.loads(plain)
        keys = CrossSigningKeys(
            SigningKey(b64decode(seeds["master"])),
            SigningKey(b64decode(seeds["self_signing"])),
            SigningKey(b64decode(seeds["user_signing"])),
        )
    except InvalidTag:
        raise KeyFileError(f"{path} does not decrypt with MATRIX_PICKLE_KEY") from None
    except KeyFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise KeyFileError(f"{path} is damaged ({exc.__class__.__name__})") from None
    if keys.publics() != document["public"]:
        raise KeyFileError(f"{path} is damaged (seeds and public keys differ)")
    return keys


# --- the homeserver's view -------------------------------------------------------------------


def _only_key(obj: JsonDict | None) -> tuple[str, str] | None:
    """(key id, public key) of a cross-signing key object, if it is a well-formed ed25519 one."""
    keys = (obj or {}).get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        return None
    key_id, public = next(iter(keys.items()))
    if not (isinstance(key_id, str) and key_id.startswith("ed25519:") and isinstance(public, str)):
        return None
    return key_id, public


@dataclass
class AccountKeys:
    """The account's keys as ``/keys/query`` shows them to the bot."""

    user_id: str
    master: JsonDict | None
    self_signing: JsonDict | None
    device: JsonDict | None

    def _key(self, obj: JsonDict | None, usage: str) -> tuple[str, str] | None:
        if obj is None or obj.get("user_id") != self.user_id or usage not in obj.get("usage", []):
            return None
        return _only_key(obj)

    @property
    def master_public(self) -> str | None:
        found = self._key(self.master, "master")
        return found[1] if found else None

    @property
    def self_signing_public(self) -> str | None:
        """The self-signing key, if the master key validly signs it."""
        found = self._key(self.self_signing, "self_signing")
        master = self._key(self.master, "master")
        if found is None or master is None or self.self_signing is None:
            return None
        return found[1] if verify(self.self_signing, self.user_id, *master) else None

    def device_signed(self) -> bool:
        """Whether the device carries a valid signature by the current self-signing key."""
        public = self.self_signing_public
        if public is None or self.device is None:
            return False
        return verify(self.device, self.user_id, f"ed25519:{public}", public)

    def held_by(self, keys: CrossSigningKeys | None) -> bool:
        return (
            keys is not None
            and self.master_public == keys.master.public
            and self.self_signing_public == keys.self_signing.public
        )


class _Api:
    """The three key endpoints, through nio's HTTP session; counts the uploads."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.uploads = 0

    async def call(
        self, method: str, path: str, body: JsonDict | None = None
    ) -> tuple[int, JsonDict]:
        headers = {"Authorization": f"Bearer {self.client.access_token}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        if path != QUERY_PATH:
            self.uploads += 1
        response = await self.client.send(method, path, data, headers)
        try:
            try:
                payload = await response.json(content_type=None)
            except ValueError:
                payload = None
        finally:
            response.release()
        answer = payload if isinstance(payload, dict) else {}
        if response.status == 429 or answer.get("errcode") == "M_LIMIT_EXCEEDED":
            retry_ms = answer.get("retry_after_ms")
            seconds = retry_ms / 1000 if isinstance(retry_ms, int | float) else None
            raise _Transient(f"{path}: rate limited", seconds)
        if response.status >= 500:
            raise _Transient(f"{path}: HTTP {response.status}")
        return response.status, answer

    async def query(self, user_id: str, device_id: str) -> AccountKeys:
        status, answer = await self.call("POST", QUERY_PATH, {"device_keys": {user_id: []}})
        if status != 200:
            raise CrossSigningError(f"/keys/query refused: HTTP {status} {answer.get('errcode')}")

        def mine(section: str) -> JsonDict | None:
            found = (answer.get(section) or {}).get(user_id)
            return found if isinstance(found, dict) else None

        device = (mine("device_keys") or {}).get(device_id)
        return AccountKeys(
            user_id,
            mine("master_keys"),
            mine("self_signing_keys"),
            device if isinstance(device, dict) else None,
        )

    async def upload_keys(self, user_id: str, body: JsonDict, password: str | None) -> bool:
        """Upload new cross-signing keys; False if the homeserver wants a password we lack."""
        status, answer = await self.call("POST", DEVICE_SIGNING_PATH, body)
        if status == 200:
            return True
        if status != 401 or "flows" not in answer:
            raise CrossSigningError(
                f"uploading the keys was refused: HTTP {status} {answer.get('errcode')} "
                f"{answer.get('error', '')}".rstrip()
            )
        stages = [
            flow.get("stages") for flow in answer.get("flows") or [] if isinstance(flow, dict)
        ]
        if ["m.login.password"] not in stages:
            hint = json.dumps(answer.get("params") or {})[:300]
            raise CrossSigningError(
                "the homeserver asks for an authentication other than the password to upload "
                f"cross-signing keys (flows {stages}, {hint}); approve the reset there, then "
                "restart cosign"
            )
        if not password:
            return False
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user_id},
            "password": password,
            "session": answer.get("session"),
        }
        status, answer = await self.call("POST", DEVICE_SIGNING_PATH, {**body, "auth": auth})
        if status == 200:
            return True
        raise CrossSigningError(
            "the homeserver refused MATRIX_PASSWORD when uploading cross-signing keys: "
            f"HTTP {status} {answer.get('errcode')}"
        )

    async def upload_signature(self, user_id: str, device_id: str, signed: JsonDict) -> None:
        status, answer = await self.call("POST", SIGNATURES_PATH, {user_id: {device_id: signed}})
        failures = answer.get("failures") or {}
        if status != 200 or failures:
            raise CrossSigningError(
                f"uploading the device signature was refused: HTTP {status} "
                f"{json.dumps(failures or answer)[:300]}"
            )


# --- the start-up check ----------------------------------------------------------------------


def _own_device_matches(client: AsyncClient, device: JsonDict | None) -> bool:
    """Whether the homeserver's copy of the device keys is the keys nio holds: never sign a key
    the bot does not own."""
    if device is None or client.olm is None:
        return False
    identity = client.olm.account.identity_keys
    keys = device.get("keys") or {}
    return (
        device.get("user_id") == client.user_id
        and device.get("device_id") == client.device_id
        and keys
        == {
            f"ed25519:{client.device_id}": identity.get("ed25519"),
            f"curve25519:{client.device_id}": identity.get("curve25519"),
        }
    )


async def ensure_cross_signed(
    client: AsyncClient,
    *,
    store: Path,
    password: str | None,
    pickle_key: str | None,
    retry_cap: float = 10.0,
) -> Outcome:
    """Make sure the account has cross-signing keys and the device is signed; never raises
    (a failure is logged and the bot carries on, unsigned until the next start)."""
    if client.olm is None or not pickle_key:
        log.info("cross-signing: skipped (encryption is off, so the device has no keys to sign)")
        return Outcome(Status.SKIPPED)
    api = _Api(client)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            status = await _ensure(client, api, store, password, pickle_key)
            return Outcome(status, api.uploads)
        except CrossSigningError as exc:
            log.error("cross-signing: device %s is not cross-signed: %s", client.device_id, exc)
            return Outcome(Status.FAILED, api.uploads)
        except RETRYABLE as exc:
            if attempt == ATTEMPTS:
                log.warning(
                    "cross-signing: the homeserver did not answer (%s); device %s stays "
                    "unsigned until the next start",
                    exc,
                    client.device_id,
                )
                return Outcome(Status.FAILED, api.uploads)
            delay = getattr(exc, "retry_after", None) or 2.0**attempt
            await asyncio.sleep(min(delay, retry_cap))
        except Exception:  # a bug here must not keep the bot from its rooms
            log.exception("cross-signing: device %s is not cross-signed", client.device_id)
            return Outcome(Status.FAILED, api.uploads)
    raise AssertionError("unreachable")


async def _ensure(
    client: AsyncClient, api: _Api, store: Path, password: str | None, pickle_key: str
) -> Status:
    user_id, device_id = client.user_id, client.device_id
    if client.should_upload_keys:  # the device keys must be on the server before signing
        uploaded = await client.keys_upload()
        if not isinstance(uploaded, KeysUploadResponse):
            raise _Transient(f"device keys upload failed: {uploaded}")
    account = await api.query(user_id, device_id)
    if not _own_device_matches(client, account.device):
        raise CrossSigningError(
            f"the homeserver's keys for device {device_id} are not this device's keys"
        )
    if account.device_signed():
        log.info(
            "cross-signing: keys already uploaded; device %s is signed by the account's "
            "self-signing key",
            device_id,
        )
        return Status.ALREADY_SIGNED

    try:
        ours = load_keys(store, user_id, pickle_key)
    except KeyFileError as exc:
        log.error("cross-signing: ignoring the stored keys: %s", exc)
        ours = None

    if account.held_by(ours):
        assert ours is not None
        await api.upload_signature(user_id, device_id, _sign_device(ours, account, user_id))
        log.info("cross-signing: signed device %s with the account's self-signing key", device_id)
        return Status.SIGNED

    replacing = account.master is not None
    if replacing:
        if not password:
            log.error(
                "cross-signing: %s already has cross-signing keys, but %s holds no private keys "
                "for them (store lost, or keys made by another client), so device %s cannot be "
                "cross-signed and Element (MSC4153) will not exchange encrypted messages with "
                "it. Set MATRIX_PASSWORD for one start to let cosign replace the keys (whoever "
                "verified %s must verify it again).",
                user_id,
                store / KEY_FILE,
                device_id,
                user_id,
            )
            return Status.KEYS_UNAVAILABLE
        log.warning(
            "cross-signing: %s has cross-signing keys whose private keys are not in %s; "
            "replacing them, since MATRIX_PASSWORD is set (whoever verified %s sees its "
            "identity change and must verify it again)",
            user_id,
            store / KEY_FILE,
            user_id,
        )
        keys = CrossSigningKeys.generate()
    else:
        keys = ours or CrossSigningKeys.generate()  # ours: saved by a start whose upload failed
    # Saved before the upload: keys on the server are never keys the bot has lost.
    try:
        path = await asyncio.to_thread(save_keys, store, user_id, keys, pickle_key)
    except OSError as exc:  # not a transport error: retrying will not help
        raise CrossSigningError(f"cannot write {store / KEY_FILE}: {exc}") from None
    if not await api.upload_keys(user_id, keys.upload_body(user_id), password):
        log.warning(
            "cross-signing: %s has no cross-signing keys and the homeserver wants the account "
            "password to create them: set MATRIX_PASSWORD for one start of `cosign run` (the "
            "access token is enough afterwards). Until then Element (MSC4153) will not exchange "
            "encrypted messages with device %s.",
            user_id,
            device_id,
        )
        return Status.NEEDS_PASSWORD
    account = await api.query(user_id, device_id)
    if not account.held_by(keys):
        raise CrossSigningError("the homeserver does not show the keys just uploaded")
    await api.upload_signature(user_id, device_id, _sign_device(keys, account, user_id))
    log.info(
        "cross-signing: %s the cross-signing keys of %s (private keys in %s) and signed device %s",
        "replaced" if replacing else "created",
        user_id,
        path,
        device_id,
    )
    return Status.REPLACED if replacing else Status.CREATED


def _sign_device(keys: CrossSigningKeys, account: AccountKeys, user_id: str) -> JsonDict:
    """The device object exactly as the homeserver stores it (it compares), with a signature by
    the self-signing key (only that one: the server keeps the others)."""
    assert account.device is not None
    device = {k: v for k, v in account.device.items() if k not in ("signatures", "unsigned")}
    return keys.self_signing.sign(device, user_id)
