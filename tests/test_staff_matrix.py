"""Staff on Matrix (a real Synapse): `!sign for MEMBER_ID` signs for a member they act for."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from helpers import create_example_letter
from matrix_support import Member, new_world, running
from synapse_server import SynapseServer, unique_localpart

from bot.db import Database
from bot.roster import COLUMNS, import_roster
from bot.store import letters, signatures


def staff_roster(members: list[Member], staff: Member, acts_for: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*COLUMNS, "acts_for"])
    for m, role, acting in [*((m, "member", "") for m in members), (staff, "staff", acts_for)]:
        group = m.group if role == "member" else ""
        row = ["", "Given", m.family_name, "MP", group, "", "", "", m.user.user_id, role]
        writer.writerow([m.member_id, *row, acting])
    return out.getvalue()


async def test_staff_sign_for_a_member_on_matrix(
    synapse: SynapseServer, tmp_path: Path, db_url: str
) -> None:
    world = new_world(synapse, tmp_path)
    first, second = world.add_members(2)
    localpart = unique_localpart("staff")
    office = Member(localpart, synapse.register_user(localpart), family_name="Office")
    world.members.append(office)  # joins the room
    room = world.room()
    world.members.remove(office)
    settings = world.settings(db_url)
    database = Database(settings.database.url)
    with database.session() as session:
        roster = staff_roster(world.members, office, f"{first.member_id};{second.member_id}")
        import_roster(session, data=roster, actor="test")
    create_example_letter(database, settings, post_to=[f"matrix:{room}"])
    async with running(settings, database, world.platform(settings)):
        await world.wait_letter_post(room)
        usage = world.say(office.user, room, "!sign")
        body = (await world.wait_reply(room, usage))["content"]["body"]
        assert body.startswith("Usage: !sign [SLUG] for MEMBER_ID")
        assert first.member_id in body and second.member_id in body
        command = world.say(office.user, room, f"!sign for {second.member_id}")
        body = (await world.wait_reply(room, command))["content"]["body"]
        assert "You signed" in body and "INTERPOL" in body
        assert f"for Given {second.family_name} MP (Australia) as their staff" in body
    with database.session() as session:
        letter = letters.get_letter(session, slug="interpol-2021")
        assert letter is not None and letter.id is not None
        assert signatures.proxy_signers(session, letter_pk=letter.id) == {
            second.member_id: office.member_id
        }
    database.dispose()
