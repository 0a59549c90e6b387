"""Slack: what an outsider must not be able to do (issue: integrity under hostile input).

- match_email links only a confirmed account of the installing workspace, only to a `member`
  with no Slack account yet (never a coordinator), and remembers misses;
- a Sign click in a channel the letter was not posted to adds no post there;
- /healthz answers while another process holds the database's write lock.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

from fakeslack import block_action_body, slash_command_body
from helpers import LETTER
from slack_support import SlackHarness, reply_text
from test_slack import count, open_letter

from bot.store import letters, members

ROSTER = (
    "member_id,given_name,family_name,group,slack_id,email,role\n"
    "au-abetz,Eric,Abetz,Australia,UABETZ,abetz@example.org,member\n"
    "ie-free,Free,Member,Ireland,,free@example.org,member\n"
    "coord,Co,Ordinator,,,boss@example.org,coordinator\n"
)


def _linked(h: SlackHarness, account: str) -> str | None:
    with h.database.session() as session:
        identity = members.get_identity(session, platform="slack", external_id=account)
        if identity is None:
            return None
        member = members.get_member_by_pk(session, pk=identity.member_pk)
        return member.member_id if member else None


async def _sign(h: SlackHarness, slug: str, account: str, token: str) -> str:
    url = h.fake.response_url(token)
    await h.post(slash_command_body("/sign", slug, account, response_url=url))
    return reply_text((await h.replies(token))[0])


async def test_match_email_never_links_an_outsider_to_a_coordinator_or_a_linked_member(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path, roster=ROSTER, match_email=True) as h:
        slug = open_letter(h)
        h.fake.add_user("UBOSS", "boss", email="BOSS@example.org")  # a coordinator's address
        h.fake.add_user("UTWIN", "twin", email="abetz@example.org")  # already linked elsewhere
        h.fake.add_user("UFAR", "far", email="free@example.org")
        h.fake.users["UFAR"]["team_id"] = "TOTHER"  # a Slack Connect user from another workspace
        h.fake.add_user("UNEW", "new", email="free@example.org")
        h.fake.users["UNEW"]["is_email_confirmed"] = False
        for i, account in enumerate(("UBOSS", "UTWIN", "UFAR", "UNEW")):
            reply = await _sign(h, slug, account, f"x{i}")
            assert "could not match" in reply, (account, reply)
            assert _linked(h, account) is None, account
        assert count(h, slug) == 0
        # the same address on a confirmed account of this workspace is linked, once
        h.fake.add_user("UFREE", "free", email="Free@Example.org ")
        assert "Free Member (Ireland)" in await _sign(h, slug, "UFREE", "ok")
        assert _linked(h, "UFREE") == "ie-free"
        h.fake.add_user("USECOND", "second", email="free@example.org")
        assert "could not match" in await _sign(h, slug, "USECOND", "second")
        assert _linked(h, "USECOND") is None


async def test_match_email_remembers_a_miss(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path, roster=ROSTER, match_email=True) as h:
        slug = open_letter(h)
        h.fake.add_user("USTRANGER", "stranger", email="nobody@example.org")
        for i in range(5):
            assert "could not match" in await _sign(h, slug, "USTRANGER", f"s{i}")
        assert len(h.fake.calls_to("users.info")) == 1


async def test_sign_click_elsewhere_adds_no_post(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path, roster=ROSTER) as h:
        slug = open_letter(h, channel="C1")
        await h.settle()
        (post,) = h.fake.calls_to("chat.postMessage")
        ts = post.response["ts"]
        for action, token in (("cosign_sign", "a"), ("cosign_sign_confirm", "b")):
            await h.post(
                block_action_body(
                    action, slug, "UABETZ", "COTHER", ts, response_url=h.fake.response_url(token)
                )
            )
            await h.replies(token)
        assert count(h, slug) == 1
        with h.database.session() as session:
            letter = letters.get_letter(session, slug=slug)
            assert letter is not None and letter.id is not None
            posts = letters.posts_of(session, letter_pk=letter.id)
            posted = {(p.platform, p.channel) for p in posts}
        assert posted == {("slack", "C1")}


async def test_healthz_does_not_wait_for_the_write_lock(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path, roster=ROSTER) as h:
        assert h.http is not None
        health = h.url.replace(h.settings.slack.path, "/healthz")
        holder = None
        if db_url.startswith("sqlite"):
            holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # another process writing, for as long as it likes
        try:
            started = time.monotonic()
            async with h.http.get(health) as response:
                assert response.status == 200
                assert (await response.json())["database"] == "ok"
            assert time.monotonic() - started < 2  # not the 30 s busy timeout
        finally:
            if holder is not None:
                holder.execute("ROLLBACK")
                holder.close()


async def test_private_letters_show_no_number_on_slack(db_url: str, tmp_path: Path) -> None:
    """visibility = "private" (DESIGN.md §8): the post and its live counter show no count, and a
    member's status says only whether they signed; a public letter's counter shows it."""
    text = LETTER.read_text(encoding="utf-8").replace(
        'slug = "interpol-2021"', 'slug = "interpol-2021"\nvisibility = "private"'
    )
    async with SlackHarness(db_url, tmp_path, roster=ROSTER) as h:
        slug = open_letter(h, text=text)
        await h.settle()
        assert [m for m in h.fake.messages_in("C1") if m.get("blocks")]  # posted
        assert "You signed" in await _sign(h, slug, "UABETZ", "p0")
        await h.settle()
        posts = [m for m in h.fake.messages_in("C1") if m.get("blocks")]
        shown = " ".join(str(m["blocks"]) + str(m.get("text", "")) for m in posts)
        assert "Open for signing until" in shown
        assert not re.search(r"\d+ signatures?\b", shown), shown
        await h.post(
            slash_command_body(
                "/cosign", f"status {slug}", "UABETZ", response_url=h.fake.response_url("st")
            )
        )
        status = reply_text((await h.replies("st"))[0])
        assert "You signed on" in status
        assert not re.search(r"\b1 signature\b", status) and "Eric Abetz" not in status
