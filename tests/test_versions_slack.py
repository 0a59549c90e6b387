"""Texts that change (DESIGN.md §9, issue 13) on Slack, against the fake Web API and the bot's
real HTTP endpoint: the Re-confirm button of the direct message a signer gets after a material
change (clicked in the IM, staff included, refused once closed), the letter post edited to the
new text (a file of the new version when it no longer fits: rule 8), and the minor-change notice
(within Slack's limits, escaped: rule 7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fakeslack import block_action_body, slash_command_body, validate_blocks
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_support import SlackHarness, reply_text
from sqlmodel import select
from test_slack import mrkdwn_text, open_letter
from test_staff_slack import STAFF_ROSTER
from test_versions import CHANGED, OLD_WORDS, ORIGINAL

from bot.letterfile import parse_letter
from bot.models import OutboxMessage, Post
from bot.models._types import utcnow
from bot.platforms.slack import blocks as kit
from bot.platforms.slack.outbound import DM_BUTTON, LETTER_FILE
from bot.store import letters, signatures
from bot.versions import change_text

NEW_WORDS = "handing a green light"


def update(h: SlackHarness, slug: str, text: str, *, minor: bool = False) -> None:
    """`cosign letter update` in-process, as tests/test_versions.py does it."""
    now = utcnow()
    source = parse_letter(text, zone=h.settings.letters.zone, now=now)
    assert source.slug == slug
    with h.database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        assert letter is not None
        change_text(
            session, letter=letter, source=source, deadline=None, minor=minor, actor="t", now=now
        )


def counted(h: SlackHarness, slug: str) -> list[str]:
    """The member_ids whose signatures count (on the current text)."""
    with h.database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        assert letter is not None and letter.id is not None
        return sorted(s.member_id for s in signatures.signatories(session, letter_pk=letter.id))


def blocks_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = message.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else list(blocks)


def buttons(message: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(action_id, label, value) of every button in a message."""
    found = []
    for block in blocks_of(message):
        for element in [block.get("accessory") or {}, *block.get("elements", [])]:
            if element.get("type") == "button":
                found.append((element["action_id"], element["text"]["text"], element["value"]))
    return found


def everything(message: dict[str, Any]) -> str:
    """All the text a message shows, fallback and blocks."""
    return str(message.get("text", "")) + json.dumps(blocks_of(message), ensure_ascii=False)


async def sign(h: SlackHarness, user: str, text: str, token: str) -> str:
    await h.post(slash_command_body("/sign", text, user, response_url=h.fake.response_url(token)))
    return reply_text((await h.replies(token))[0])


async def click(h: SlackHarness, user: str, dm: dict[str, Any], value: str, token: str) -> str:
    """A Re-confirm click as Slack POSTs it from the IM: the channel is the D… conversation."""
    im = h.fake.ims.get(user) or h.fake.im_of(user)
    status, _, elapsed = await h.post(
        block_action_body(
            kit.RECONFIRM_ACTION,
            value,
            user,
            im,
            dm["ts"],
            response_url=h.fake.response_url(token),
            channel_name="directmessage",
            message=dm,
        )
    )
    assert status == 200 and elapsed < 3
    return reply_text((await h.replies(token))[0])


def reconfirm_dm(h: SlackHarness, user: str) -> dict[str, Any]:
    """The one message in the user's IM that carries a Re-confirm button."""
    (dm,) = [m for m in h.fake.dms_readable_by(user) if buttons(m)]
    return dm


def updates_of(h: SlackHarness, channel: str = "C1") -> list[dict[str, Any]]:
    calls = [c for c in h.fake.calls_to("chat.update") if c.args.get("channel") == channel]
    assert all(c.ok for c in calls), [c.response for c in calls]
    return [c.args for c in calls]


def uploads_to(h: SlackHarness, channel: str) -> list[Any]:
    return [f for f in h.fake.files.values() if f.completed and channel in f.channels]


# --- the Re-confirm button ------------------------------------------------------------------------


async def test_re_confirm_button_in_the_dm_and_the_post_shows_the_new_text(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h)
        await h.settle()
        (post,) = h.fake.calls_to("chat.postMessage")
        post_ts = post.response["ts"]
        assert "signed" in await sign(h, "UALTON", slug, "s1")
        assert "signed" in await sign(h, "UABETZ", slug, "s2")
        update(h, slug, CHANGED)
        await h.settle()
        assert counted(h, slug) == []  # given to version 1: they no longer count

        # Each signer: one DM with the diff, and a Re-confirm button after the text.
        for user in ("UALTON", "UABETZ"):
            dm = reconfirm_dm(h, user)
            assert buttons(dm) == [(kit.RECONFIRM_ACTION, "Re-confirm", slug)]
            assert blocks_of(dm)[-1]["type"] == "actions"
            assert "[-giving-]{+handing+} a green light" in everything(dm)
            assert not validate_blocks(blocks_of(dm))

        # The post was edited: new text, the change note, the buttons kept while open.
        edit = updates_of(h)[-1]
        assert edit["ts"] == post_ts
        shown = everything(edit)
        assert NEW_WORDS in shown and OLD_WORDS not in shown
        assert "Text changed" in shown and "version 2" in shown
        assert [b[0] for b in buttons(edit)] == [kit.SIGN_ACTION, kit.WITHDRAW_ACTION]

        # The click comes from the IM; the value names the letter.
        dm = reconfirm_dm(h, "UALTON")
        done = await click(h, "UALTON", dm, slug, "r1")
        assert "re-confirmed" in done and "already" not in done, done
        assert counted(h, slug) == ["uk-alton"]
        again = await click(h, "UALTON", dm, slug, "r2")
        assert "already signed" in again and "re-confirmed" not in again, again
        assert counted(h, slug) == ["uk-alton"]
        with h.database.session() as session:  # the IM is no place the letter was posted
            assert [p.channel for p in session.exec(select(Post)).all()] == ["C1"]
        await h.settle()
        assert "1 signature so far" in everything(updates_of(h)[-1])

        # Once closed, a click is refused with when signing closed, and counts nothing.
        await h.post(
            slash_command_body(
                "/cosign", f"close {slug}", "UADMIN", response_url=h.fake.response_url("c")
            )
        )
        assert "with 1 signature" in reply_text((await h.replies("c"))[0])
        late = await click(h, "UABETZ", reconfirm_dm(h, "UABETZ"), slug, "r3")
        assert "closed at" in late and "too late" in late and "re-confirmed" not in late, late
        assert counted(h, slug) == ["uk-alton"]


async def test_staff_re_confirm_for_their_member_and_a_forwarded_button_is_refused(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path, roster=STAFF_ROSTER) as h:
        slug = open_letter(h)
        await h.settle()
        assert "as their staff" in await sign(h, "USTAFF", f"{slug} for au-abetz", "s1")
        update(h, slug, CHANGED)
        await h.settle()
        assert counted(h, slug) == []
        # the staff who signed are asked, not the member (told only that staff signed)
        assert [m for m in h.fake.dms_readable_by("UABETZ") if buttons(m)] == []
        dm = reconfirm_dm(h, "USTAFF")
        value = f"{slug} for au-abetz"
        assert buttons(dm) == [(kit.RECONFIRM_ACTION, "Re-confirm", value)]

        # Forwarded to people who do not act for au-abetz: refused, nothing counted.
        other_staff = await click(h, "UAIDE", dm, value, "f1")
        assert "You do not act for 'au-abetz'" in other_staff, other_staff
        member = await click(h, "UALTON", dm, value, "f2")
        assert "You can only sign for yourself" in member, member
        assert counted(h, slug) == []

        done = await click(h, "USTAFF", dm, value, "r1")
        assert "You re-confirmed Senator Eric Abetz's signature" in done, done
        assert counted(h, slug) == ["au-abetz"]


#: Long words: a text or diff past Slack's limits in few words (the word diff's time grows
#: with the square of the number of words).
PAD = "-lorem-ipsum-dolor-sit-amet"


def long_letter(body_words: int, *, changed_every: int = 0, extra: str = "") -> str:
    """The example letter with a body of `body_words` long words (every `changed_every`-th one
    changed when given): 200 words make ~7,000 characters."""
    head, _, _ = ORIGINAL.partition("\n+++\n")
    words = [
        ("CHANGED" if changed_every and i % changed_every == 0 else "word") + f"{i}{PAD}"
        for i in range(body_words)
    ]
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    return head + "\n+++\n" + "\n".join(lines) + extra + "\n"


async def test_a_dm_too_long_for_a_message_goes_as_a_file_and_its_button_follows_once(
    db_url: str, tmp_path: Path
) -> None:
    first = long_letter(200)  # fits its post
    changed = long_letter(200, changed_every=1)  # every word: the diff is ~2× the text
    async with SlackHarness(db_url, tmp_path) as h:
        h.fake.add_user("UALTON", "alton", "David Alton")
        slug = open_letter(h, text=first)
        await h.settle()
        await sign(h, "UALTON", slug, "s1")
        h.fake.fail("chat.postMessage", "internal_error")  # the button's first try fails
        update(h, slug, changed)
        await h.settle()
        im = h.fake.ims["UALTON"]
        (upload,) = uploads_to(h, im)  # one upload, though the button was retried
        content = upload.content.decode()
        assert len(content) > kit.MAX_BLOCK_CHARS
        assert all(w in content for w in ("word0-", "CHANGED0-", "word199-", "CHANGED199-"))
        assert all(c.ok for c in h.fake.calls_to("files.completeUploadExternal"))
        posted = h.fake.calls_to("chat.postMessage")
        tries = [c for c in posted if c.args.get("channel") == "UALTON"]
        assert [c.ok for c in tries] == [False, True]
        dm = reconfirm_dm(h, "UALTON")
        assert buttons(dm) == [(kit.RECONFIRM_ACTION, "Re-confirm", slug)]
        assert "Re-confirm" in dm["text"] and "version 2" in dm["text"]
        with h.database.session() as session:
            rows = session.exec(
                select(OutboxMessage).where(OutboxMessage.channel == "UALTON")
            ).all()
            assert sorted((r.kind, r.attempts) for r in rows) == [("dm", 1), (DM_BUTTON, 2)]
            assert all(r.delivered_at is not None for r in rows)

        assert "re-confirmed" in await click(h, "UALTON", dm, slug, "r1")
        assert counted(h, slug) == ["uk-alton"]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=kit.MAX_BLOCK_CHARS + 50), st.sampled_from(" \n"))
def test_a_button_never_breaks_the_block_limits(length: int, gap: str) -> None:
    """Near the limit the text alone fits and text + button does not: then None (file)."""
    text = gap.join(["x" * 40] * (length // 41 + 1))[:length]
    button = kit.dm_button({"action": "reconfirm", "value": "a-letter for someone"})
    assert button is not None
    found = kit.text_blocks_with(text, button)
    alone = kit.text_blocks(text)
    if found is None:
        assert alone is None or not kit.within_limits([*alone, button])
        return
    assert kit.within_limits(found) and not validate_blocks(found) and found[-1] == button
    shown = "".join(b["text"]["text"] for b in found[:-1])
    assert shown.replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")


# --- the post, edited -----------------------------------------------------------------------------


async def test_a_text_that_no_longer_fits_its_post_reaches_the_channel_as_a_file_once(
    db_url: str, tmp_path: Path
) -> None:
    short, long_ = ORIGINAL, long_letter(360)
    async with SlackHarness(db_url, tmp_path) as h:
        h.fake.add_user("UALTON", "alton", "David Alton")  # their DM (the diff) goes as a file
        slug = open_letter(h, text=short)
        await h.settle()
        assert uploads_to(h, "C1") == []  # it fitted: no file
        await sign(h, "UALTON", slug, "s1")
        update(h, slug, long_)
        await h.settle()
        await h.settle()  # the edit queued the file: deliver it
        edit = updates_of(h)[-1]
        assert "Text changed" in everything(edit) and f"{slug}-v2.txt" in everything(edit)
        assert [b[0] for b in buttons(edit)] == [kit.SIGN_ACTION, kit.WITHDRAW_ACTION]
        assert not validate_blocks(blocks_of(edit)) and kit.within_limits(blocks_of(edit))
        (upload,) = uploads_to(h, "C1")
        assert upload.filename == f"{slug}-v2.txt" and "(version 2)" in str(upload.title)
        assert "word359-" in upload.content.decode()  # the whole new text, nothing cut
        # More edits of the same version (the count moves) upload nothing more.
        assert "re-confirmed" in await sign(h, "UALTON", slug, "s2")
        await h.settle()
        assert "1 signature so far" in everything(updates_of(h)[-1])
        assert len(uploads_to(h, "C1")) == 1
        with h.database.session() as session:
            files = session.exec(select(OutboxMessage).where(OutboxMessage.kind == LETTER_FILE))
            assert len(files.all()) == 1


async def test_a_letter_posted_with_a_file_gets_the_file_of_each_new_version(
    db_url: str, tmp_path: Path
) -> None:
    first, second = long_letter(360), long_letter(360, changed_every=100)
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h, text=first)
        await h.settle()
        (original,) = uploads_to(h, "C1")
        assert original.filename == f"{slug}.txt" and "word100-" in original.content.decode()
        update(h, slug, second)
        await h.settle()
        await h.settle()  # the edit queued the file: deliver it
        await h.settle()  # and once more: nothing new
        names = sorted(u.filename for u in uploads_to(h, "C1"))
        assert names == [f"{slug}-v2.txt", f"{slug}.txt"]
        (new,) = [u for u in uploads_to(h, "C1") if u.filename == f"{slug}-v2.txt"]
        assert "CHANGED100-" in new.content.decode() and "word100-" not in new.content.decode()
        edit = updates_of(h)[-1]
        assert "Text changed" in everything(edit) and f"{slug}-v2.txt" in everything(edit)


# --- a minor change -----------------------------------------------------------------------------


async def test_a_minor_change_notice_is_escaped_and_never_cut(
    db_url: str, tmp_path: Path
) -> None:
    hostile = " <!channel> <@U1> & <https://evil.example|x>"
    first = long_letter(200)
    mentions = long_letter(200, extra=hostile)
    every_word = long_letter(200, changed_every=1, extra=hostile)
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h, text=first)
        await h.settle()
        await sign(h, "UALTON", slug, "s1")
        h.fake.clear_calls()
        update(h, slug, mentions, minor=True)
        await h.settle()
        assert counted(h, slug) == ["uk-alton"]  # a minor change asks nobody
        assert h.fake.dms_readable_by("UALTON") == []
        (notice,) = [c for c in h.fake.calls_to("chat.postMessage") if c.args["channel"] == "C1"]
        assert notice.ok and not notice.link_names and not validate_blocks(notice.args["blocks"])
        text = everything(notice.args)
        assert "a minor change" in text and "{+" in text and "&lt;!channel&gt;" in text
        assert "&lt;@U1&gt;" in text and "&amp;" in text and "&lt;https://evil" in text
        for ping in ("<!channel>", "<@U1>", "<https://"):
            assert ping not in mrkdwn_text(notice.args), ping
            assert ping not in mrkdwn_text(updates_of(h)[-1]), ping  # the post, edited
        assert "Text corrected" in everything(updates_of(h)[-1])

        # A minor change whose diff is too long for one message: the whole of it, as a file.
        h.fake.clear_calls()
        update(h, slug, every_word, minor=True)
        await h.settle()
        posted = [c for c in h.fake.calls_to("chat.postMessage") if c.args["channel"] == "C1"]
        assert posted == []  # not as a message cut to fit
        (notice_file,) = [u for u in uploads_to(h, "C1") if u.filename.endswith("-notice.txt")]
        content = notice_file.content.decode()
        assert "a minor change" in content and len(content) > kit.MAX_BLOCK_CHARS
        assert all(w in content for w in ("word0-", "CHANGED0-", "word199-", "CHANGED199-"))
        comment = notice_file.initial_comment
        assert comment is not None and len(comment) < 2000 and "a minor change" in comment
        assert counted(h, slug) == ["uk-alton"]
