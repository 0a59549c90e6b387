"""The copy of the published letter on Matrix, against the real Synapse (DESIGN.md §10).

Each compiled signatory gets, in their direct room (bot.platforms.matrix.direct: made once,
``is_direct``, listed in ``m.direct``), the message (``m.text``) and the PDF as an ``m.file``
(``application/pdf``, ``"m.mentions": {}``), uploaded encrypted when the room is encrypted. The
file downloaded (and decrypted) is byte for byte the PDF stored at close.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers import create_example_letter
from matrix_support import eventually, new_world, running
from nio import DownloadResponse, RoomEncryptedFile, RoomMessageText
from nio.crypto.attachments import decrypt_attachment
from sqlmodel import select
from synapse_server import SynapseServer
from test_campaigns import SLUG, close, sign
from test_matrix_direct import recorded
from test_matrix_e2ee import E2EEMember, member_clients  # noqa: F401  (fixture)

from bot import publishing
from bot.config import Settings
from bot.db import Database
from bot.direct import DM_FILE
from bot.models import OutboxMessage
from bot.models._types import utcnow
from bot.runtime import Bot


def delivered_copies(database: Database) -> list[OutboxMessage]:
    with database.session() as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.kind == DM_FILE)).all()
        return [r for r in rows if r.delivered_at is not None]


def closed_letter(database: Database, settings: Settings, *member_ids: str) -> bytes:
    """The example letter signed by these members and closed (so published); its PDF."""
    create_example_letter(database, settings, post_to=["console:#members"])
    sign(database, *member_ids)
    close(database, settings)
    pdf = publishing.compiled_pdf(database, slug=SLUG)
    assert pdf is not None and pdf.startswith(b"%PDF")
    return pdf


async def queue_and_deliver(bot: Bot, database: Database, count: int) -> list[OutboxMessage]:
    """One scheduler pass (it queues the copies), then wait until `count` are delivered."""
    await asyncio.to_thread(bot.scheduler.tick, utcnow())
    bot.deliverer.notify()
    return await eventually(
        lambda: len(delivered_copies(database)) >= count and delivered_copies(database),
        timeout=40,
        what="copies delivered",
    )


async def test_signatory_gets_the_pdf_in_their_direct_room(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    world = new_world(synapse, tmp_path)
    signer, bystander = world.add_members(2)
    settings = world.settings(db_url)
    database = Database(settings.database.url)
    world.import_roster(database)
    pdf = closed_letter(database, settings, signer.member_id)

    async with running(settings, database, world.platform(settings)) as bot:
        (row,) = await queue_and_deliver(bot, database, 1)
        await asyncio.to_thread(bot.scheduler.tick, utcnow())  # a second pass: nothing more
        await bot.drain(platforms=["matrix"], timeout=10)
    room = recorded(database, signer.user.user_id)
    assert room is not None and row.result is not None and row.result["room_id"] == room
    assert recorded(database, bystander.user.user_id) is None  # did not sign: no message

    synapse.join(signer.user.access_token, room)
    events = [
        e
        for e in synapse.messages(signer.user.access_token, room)
        if e.get("sender") == world.bot.user_id and e.get("type") == "m.room.message"
    ]
    text, attached = events  # one copy: the message, then the file
    assert text["content"]["msgtype"] == "m.text" and text["content"]["m.mentions"] == {}
    assert "was published on" in text["content"]["body"]
    assert "with 1 signature," in text["content"]["body"]
    content = attached["content"]
    assert content["msgtype"] == "m.file" and content["m.mentions"] == {}
    assert content["info"]["mimetype"] == "application/pdf"
    assert content["body"] == f"{SLUG}.pdf" and content["info"]["size"] == len(pdf)
    assert world.download(content["url"]) == pdf
    database.dispose()


async def test_encrypted_direct_room_gets_the_pdf_encrypted(
    synapse: SynapseServer,
    tmp_path: Path,
    sqlite_url: str,
    member_clients: list[E2EEMember],  # noqa: F811
) -> None:
    world = new_world(synapse, tmp_path)
    (signer,) = world.add_members(1)
    settings = world.settings(sqlite_url, encryption=True)
    database = Database(settings.database.url)
    world.import_roster(database)
    pdf = closed_letter(database, settings, signer.member_id)
    alice = E2EEMember(synapse, signer.user, tmp_path / "member-store")
    member_clients.append(alice)
    await alice.client.keys_upload()

    async with running(settings, database, world.platform(settings)) as bot:
        await queue_and_deliver(bot, database, 1)
        room = recorded(database, signer.user.user_id)
        assert room is not None
        await alice.sync()
        await alice.client.join(room)
        message = await alice.wait(
            lambda e: isinstance(e, RoomMessageText) and "was published on" in e.body, timeout=30
        )
        assert message.decrypted
        attached = await alice.wait(lambda e: isinstance(e, RoomEncryptedFile), timeout=30)
    content = attached.source["content"]
    assert content["info"]["mimetype"] == "application/pdf" and content["m.mentions"] == {}
    assert "url" not in content  # the media is the ciphertext; the key travels encrypted
    downloaded = await alice.client.download(mxc=attached.url)
    assert isinstance(downloaded, DownloadResponse)
    assert downloaded.body != pdf
    plain = decrypt_attachment(
        downloaded.body, content["file"]["key"]["k"], attached.hashes["sha256"], attached.iv
    )
    assert plain == pdf
    raw = [
        e
        for e in synapse.messages(signer.user.access_token, room)
        if e.get("sender") == world.bot.user_id and "state_key" not in e
    ]
    assert raw and all(e["type"] == "m.room.encrypted" for e in raw)
    database.dispose()
