"""The bot's device is cross-signed by its own account, as Element requires since MSC4153.

What another user sees through ``/keys/query`` on the real Synapse: a master key, a self-signing key
signed by it, and the bot's device signed by the self-signing key — checked with signedjson (what
Synapse itself verifies with), not with the code under test. A restart uploads nothing; the
private keys are stored encrypted; a store that lost them is reported, and replaced only with the
password.
"""

from __future__ import annotations

import base64
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from matrix_support import PICKLE_KEY, MatrixWorld, new_world, running
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from synapse_server import SynapseServer

from bot.db import Database
from bot.platforms.matrix import MatrixPlatform
from bot.platforms.matrix.content import render_pair
from bot.platforms.matrix.cross_signing import KEY_FILE, KeyFileError, Status, load_keys

Keys = dict[str, Any]


def unpadded_b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def only_key(key_object: Keys) -> str:
    (public,) = key_object["keys"].values()
    return str(public)


def verify_key(public: str) -> Any:
    return decode_verify_key_bytes(f"ed25519:{public}", unpadded_b64decode(public))


def bot_keys(world: MatrixWorld, device_id: str) -> tuple[Keys, Keys, Keys]:
    """(master, self-signing, device) of the bot, as the owner sees them, all checked."""
    user = world.bot.user_id
    answer = world.keys_of(user)
    master = answer["master_keys"][user]
    self_signing = answer["self_signing_keys"][user]
    device = answer["device_keys"][user][device_id]
    assert master["usage"] == ["master"] and self_signing["usage"] == ["self_signing"]
    verify_signed_json(self_signing, user, verify_key(only_key(master)))
    verify_signed_json(device, user, verify_key(only_key(self_signing)))
    return master, self_signing, device


def device_ed25519(platform: MatrixPlatform) -> str:
    assert platform.client is not None and platform.client.olm is not None
    return str(platform.client.olm.account.identity_keys["ed25519"])


async def answers(world: MatrixWorld, room: str) -> None:
    reply = await world.wait_reply(room, world.say(world.owner, room, "!letters"))
    assert "No letter" in reply["content"]["body"]


async def test_device_is_cross_signed_once_and_kept_across_restarts(
    synapse: SynapseServer, tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    world = new_world(synapse, tmp_path)
    room = world.room()
    settings = world.settings(sqlite_url, encryption=True)
    database = Database(settings.database.url)
    store = tmp_path / "matrix-store"
    device_id = world.bot.device_id

    first = world.password_platform(settings)
    async with running(settings, database, first):
        assert first.cross_signing is not None and first.cross_signing.status == Status.CREATED
        ed25519 = device_ed25519(first)
        await answers(world, room)
    master, self_signing, device = bot_keys(world, device_id)
    assert device["keys"][f"ed25519:{device_id}"] == ed25519  # the bot's own device key
    assert f"ed25519:{only_key(self_signing)}" in device["signatures"][world.bot.user_id]

    # The private keys: 0600 in a 0700 directory, encrypted (no seed in any usual encoding).
    key_file = store / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert store.stat().st_mode & 0o777 == 0o700
    saved = key_file.read_bytes()
    keys = load_keys(store, world.bot.user_id, PICKLE_KEY)
    assert keys is not None and keys.master.public == only_key(master)
    for seed in (keys.master.seed, keys.self_signing.seed, keys.user_signing.seed):
        for encoded in (
            seed,
            seed.hex().encode(),
            base64.b64encode(seed),
            base64.b64encode(seed).rstrip(b"="),
            base64.urlsafe_b64encode(seed).rstrip(b"="),
        ):
            assert encoded not in saved
    assert world.bot.password.encode() not in saved and PICKLE_KEY.encode() not in saved
    with pytest.raises(KeyFileError):
        load_keys(store, world.bot.user_id, "another-pickle-key")

    # Restarted: the same keys and signature, and no upload at all.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bot.platforms.matrix.cross_signing"):
        second = world.password_platform(settings)
        async with running(settings, database, second):
            assert second.cross_signing is not None
            assert second.cross_signing.status == Status.ALREADY_SIGNED
            assert second.cross_signing.uploads == 0
            await answers(world, room)
    assert "cross-signing: keys already uploaded" in caplog.text
    assert bot_keys(world, device_id) == (master, self_signing, device)
    assert key_file.read_bytes() == saved
    database.dispose()


async def test_new_device_and_lost_store(
    synapse: SynapseServer, tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Keys created with the access token alone (Synapse lets the first upload through without
    UIA); a second device signed from the stored keys; a device whose store lost them is
    reported, and only the password lets the bot replace the account's keys."""
    world = new_world(synapse, tmp_path)
    room = world.room()
    user = world.bot.user_id

    settings = world.settings(sqlite_url, encryption=True)
    database = Database(settings.database.url)
    token_only = world.platform(settings)
    async with running(settings, database, token_only):
        assert token_only.cross_signing is not None
        assert token_only.cross_signing.status == Status.CREATED
    master, _, _ = bot_keys(world, world.bot.device_id)
    database.dispose()

    # Another device of the account, whose store holds the key file: signed, nothing else.
    second = synapse.login(user, world.bot.password, device_id="COSIGN2")
    store2 = tmp_path / "store2"
    store2.mkdir(mode=0o700)
    shutil.copy(tmp_path / "matrix-store" / KEY_FILE, store2 / KEY_FILE)
    settings2 = world.settings(
        sqlite_url, encryption=True, device_id="COSIGN2", store_path=str(store2)
    )
    database = Database(settings2.database.url)
    platform = world.platform(settings2, access_token=second.access_token)
    async with running(settings2, database, platform):
        assert platform.cross_signing is not None
        assert platform.cross_signing.status == Status.SIGNED
        assert platform.cross_signing.uploads == 1
    assert bot_keys(world, "COSIGN2")[0] == master
    database.dispose()

    # A third device with no key file and no password: an error, the bot carries on, unsigned.
    third = synapse.login(user, world.bot.password, device_id="COSIGN3")
    settings3 = world.settings(
        sqlite_url, encryption=True, device_id="COSIGN3", store_path=str(tmp_path / "store3")
    )
    database = Database(settings3.database.url)
    caplog.clear()
    platform = world.platform(settings3, access_token=third.access_token)
    async with running(settings3, database, platform):
        assert platform.cross_signing is not None
        assert platform.cross_signing.status == Status.KEYS_UNAVAILABLE
        assert not platform.cross_signed
        await answers(world, room)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("cannot be cross-signed" in m and "MATRIX_PASSWORD" in m for m in errors)
    device = world.keys_of(user)["device_keys"][user]["COSIGN3"]
    with pytest.raises(SignatureVerifyException):
        verify_signed_json(device, user, verify_key(only_key(master)))
    assert world.keys_of(user)["master_keys"][user] == master

    # A wrong password is refused by the homeserver's UIA, and never logged.
    caplog.clear()
    platform = world.platform(settings3, access_token=third.access_token, password="wrong-pw-1234")
    async with running(settings3, database, platform):
        assert platform.cross_signing is not None
        assert platform.cross_signing.status == Status.FAILED
    assert "refused MATRIX_PASSWORD" in caplog.text and "wrong-pw-1234" not in caplog.text
    assert world.keys_of(user)["master_keys"][user] == master

    # With the right password the keys are replaced (through UIA), loudly, and the device signed.
    caplog.clear()
    platform = world.platform(settings3, access_token=third.access_token, password=second.password)
    async with running(settings3, database, platform):
        assert platform.cross_signing is not None
        assert platform.cross_signing.status == Status.REPLACED
        assert platform.cross_signed
    assert "replacing them" in caplog.text
    new_master, _, _ = bot_keys(world, "COSIGN3")
    assert new_master != master
    assert world.bot.password not in caplog.text
    database.dispose()


@pytest.mark.parametrize("cross_signed", [True, False])
def test_undecryptable_hint_no_longer_asks_to_verify_the_device(cross_signed: bool) -> None:
    """Element has no manual device verification any more: the hint must not ask for it."""
    hint = render_pair(
        "matrix/undecryptable.j2",
        device="COSIGN",
        user="@cosign:example.org",
        cross_signed=cross_signed,
    )
    for text in (hint.text, hint.html):
        assert "could not decrypt" in text and "fingerprint" not in text
        assert "verify my device" not in text
    if cross_signed:
        assert "cross-signed by my account @cosign:example.org" in hint.text
        assert "verify me as a user" in hint.text
    else:
        assert "not cross-signed yet" in hint.text
