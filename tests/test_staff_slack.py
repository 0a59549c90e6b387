"""Staff on Slack (fake Web API): the Sign button asks whom they sign for, as their staff, with
one Confirm per member they act for; a Confirm signs for exactly that member."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fakeslack import block_action_body
from slack_support import ROSTER, SlackHarness, reply_text
from test_slack import count, open_letter

from bot import direct
from bot.store import members

STAFF_ROSTER = (
    ROSTER.replace(",role\n", ",role,acts_for\n", 1).replace(",member\n", ",member,\n")
    + "abetz-office,,Jane,Doe,,,USTAFF,,staff,au-abetz\n"
    + "chief,,Sam,Chief,,,UCHIEF,,staff,au-abetz;uk-alton\n"
    + "mailme-office,,Pat,Aide,,,UAIDE,,staff,mailme\n"
).replace(",coordinator\n", ",coordinator,\n")


def confirm_buttons(reply: dict[str, Any]) -> list[str]:
    """The value each Confirm button carries, in order."""
    blocks = reply.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    values = []
    for block in blocks or []:
        buttons = [block.get("accessory") or {}, *block.get("elements", [])]
        values += [b["value"] for b in buttons if b.get("action_id") == "cosign_sign_confirm"]
    return values


async def test_staff_sign_button_names_the_member_and_the_staff_role(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path, roster=STAFF_ROSTER) as h:
        slug = open_letter(h)
        await h.settle()
        (post,) = h.fake.calls_to("chat.postMessage")
        ts = post.response["ts"]
        await h.post(
            block_action_body(
                "cosign_sign", slug, "USTAFF", "C1", ts, response_url=h.fake.response_url("s1")
            )
        )
        (ask,) = await h.replies("s1")
        assert (
            "Sign “Candidacy of Hu Binchen (P.R. China) to INTERPOL's Executive Committee” "
            "for Senator Eric Abetz (Australia) as their staff?"
        ) in reply_text(ask)
        assert confirm_buttons(ask) == [f"{slug} for au-abetz"]
        assert count(h, slug) == 0  # nothing recorded until Confirm
        await h.post(
            block_action_body(
                "cosign_sign_confirm",
                f"{slug} for au-abetz",
                "USTAFF",
                "C1",
                ts,
                response_url=h.fake.response_url("s2"),
            )
        )
        (done,) = await h.replies("s2")
        assert "You signed" in reply_text(done)
        assert "for Senator Eric Abetz (Australia) as their staff" in reply_text(done)
        assert count(h, slug) == 1


async def test_staff_of_several_get_one_confirm_per_member(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path, roster=STAFF_ROSTER) as h:
        slug = open_letter(h)
        await h.settle()
        (post,) = h.fake.calls_to("chat.postMessage")
        ts = post.response["ts"]
        await h.post(
            block_action_body(
                "cosign_sign", slug, "UCHIEF", "C1", ts, response_url=h.fake.response_url("c1")
            )
        )
        (ask,) = await h.replies("c1")
        text = reply_text(ask)
        assert "for Senator Eric Abetz (Australia) as their staff?" in text
        assert "for Lord (David) Alton (United Kingdom) as their staff?" in text
        assert confirm_buttons(ask) == [f"{slug} for au-abetz", f"{slug} for uk-alton"]
        await h.post(
            block_action_body(
                "cosign_sign_confirm",
                f"{slug} for uk-alton",
                "UCHIEF",
                "C1",
                ts,
                response_url=h.fake.response_url("c2"),
            )
        )
        (done,) = await h.replies("c2")
        assert "for Lord (David) Alton (United Kingdom) as their staff" in reply_text(done)
        assert count(h, slug) == 1
        # a forged Confirm for someone they do not act for is refused
        await h.post(
            block_action_body(
                "cosign_sign_confirm",
                f"{slug} for mailme",
                "UCHIEF",
                "C1",
                ts,
                response_url=h.fake.response_url("c3"),
            )
        )
        (refused,) = await h.replies("c3")
        assert "You do not act for 'mailme'" in reply_text(refused)
        assert count(h, slug) == 1


async def test_a_member_without_a_chat_account_is_reached_through_their_staff(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path, roster=STAFF_ROSTER) as h:
        with h.database.session() as session:
            member = members.get_member(session, member_id="mailme")
            linked = members.get_member(session, member_id="au-abetz")
            assert member is not None and linked is not None
            assert direct.account_of(session, member=member) == ("slack", "UAIDE")
            assert direct.account_of(session, member=linked) == ("slack", "UABETZ")
