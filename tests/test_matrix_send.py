"""How the sender classifies nio's exceptions: encryption not ready yet is retryable, an unknown
room is not. The exceptions are nio's own classes, raised where nio raises them (``room_send``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nio import AsyncClient, LocalProtocolError
from nio.exceptions import (
    GroupEncryptionError,
    MembersSyncError,
    OlmTrustError,
    SendRetryError,
)

from bot.platforms.matrix.send import Sender


class RaisingClient(AsyncClient):
    """A nio client whose ``room_send`` fails the way nio's does before any request is made."""

    error: BaseException = LocalProtocolError("unset")

    async def room_send(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[RaisingClient]:
    made = RaisingClient("http://127.0.0.1:9", "@cosign:example.org", store_path=str(tmp_path))
    yield made
    await made.close()


@pytest.mark.parametrize(
    "error",
    [
        SendRetryError("Max sync retries exceeded"),  # a LocalProtocolError subclass
        MembersSyncError("The room is encrypted and the members aren't fully synced."),
        GroupEncryptionError("Group session for room !r not shared."),
        OlmTrustError("device not trusted"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_encryption_not_ready_is_retried(client: RaisingClient, error: Exception) -> None:
    client.error = error
    delivery = await Sender(client, encryption=True).room_send("!r:example.org", {"body": "x"})
    assert not delivery.ok and not delivery.permanent
    assert "encryption not ready" in delivery.error


async def test_unknown_room_is_permanent(client: RaisingClient) -> None:
    client.error = LocalProtocolError("No such room with id !r:example.org found.")
    delivery = await Sender(client, encryption=True).room_send("!r:example.org", {"body": "x"})
    assert not delivery.ok and delivery.permanent and "not in room" in delivery.error
