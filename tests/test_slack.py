"""The Slack platform over HTTP against the fake Web API: commands, buttons, signatures, bursts,
letter posts within limits, 429s, hostile names, retried events and the deadline announcement."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakeslack import block_action_body, event_callback_body, slash_command_body
from helpers import LETTER
from slack_support import SlackHarness, burst_roster, reply_text

from bot.campaign import Target, post_letter
from bot.letterfile import parse_letter
from bot.models._types import utcnow
from bot.store import letters, signatures


def open_letter(
    h: SlackHarness,
    *,
    channel: str = "C1",
    text: str | None = None,
    deadline: timedelta = timedelta(days=2),
) -> str:
    now = utcnow()
    source = parse_letter(
        text or LETTER.read_text(encoding="utf-8"), zone=h.settings.letters.zone, now=now
    )
    with h.database.session() as session:
        letter = letters.create_letter(
            session, source=source, deadline=now + deadline, actor="test"
        )
        assert letter is not None
        post_letter(
            session,
            settings=h.settings,
            letter=letter,
            targets=[Target("slack", channel)],
            actor="test",
            now=now,
        )
    return source.slug


def count(h: SlackHarness, slug: str) -> int:
    with h.database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        assert letter is not None and letter.id is not None
        return signatures.count_active(session, letter_pk=letter.id)


def all_blocks_text(args: dict[str, Any]) -> str:
    return json.dumps(args.get("blocks"), ensure_ascii=False) + str(args.get("text", ""))


def mrkdwn_text(args: dict[str, Any]) -> str:
    """Only the fields where Slack would turn <!channel> into a ping (not plain_text)."""
    found = [str(args.get("text", ""))]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(str(node.get("text", "")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(args.get("blocks"))
    return "\n".join(found)


async def test_slash_sign_acks_then_replies_after_commit(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h)
        await h.settle()
        url = h.fake.response_url("t1")
        status, body, elapsed = await h.post(
            slash_command_body("/sign", "", "UABETZ", response_url=url)
        )
        assert status == 200 and elapsed < 3
        (reply,) = await h.replies("t1")
        text = reply_text(reply)
        assert "signed" in text and "Candidacy of Hu Binchen" in text
        assert reply["response_type"] == "ephemeral"
        assert count(h, slug) == 1
        url2 = h.fake.response_url("t2")
        await h.post(slash_command_body("/sign", slug, "UABETZ", response_url=url2))
        (again,) = await h.replies("t2")
        assert "already signed" in reply_text(again)
        assert count(h, slug) == 1


async def test_unknown_user_and_non_coordinator(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h)
        await h.post(
            slash_command_body("/sign", slug, "USTRANGER", response_url=h.fake.response_url("u1"))
        )
        assert "could not match" in reply_text((await h.replies("u1"))[0])
        for i, sub in enumerate(["post", "close", "extend", "preview", "link", "pending"]):
            token = f"c{i}"
            await h.post(
                slash_command_body(
                    "/cosign", f"{sub} {slug}", "UABETZ", response_url=h.fake.response_url(token)
                )
            )
            assert "Only coordinators" in reply_text((await h.replies(token))[0])
        # `/cosign help` is everyone's help for a member (Slack has no `/help` for apps)
        await h.post(
            slash_command_body("/cosign", "help", "UABETZ", response_url=h.fake.response_url("h"))
        )
        member_help = reply_text((await h.replies("h"))[0])
        assert "/cosign status [SLUG]" in member_help and "/cosign post" not in member_help
        await h.post(
            slash_command_body(
                "/cosign", "pending", "UADMIN", response_url=h.fake.response_url("p")
            )
        )
        assert "USTRANGER" in reply_text((await h.replies("p"))[0])
        await h.post(
            slash_command_body(
                "/cosign",
                "link <@USTRANGER|bob> uk-alton",
                "UCOORD",
                response_url=h.fake.response_url("l"),
            )
        )
        assert "Lord (David) Alton" in reply_text((await h.replies("l"))[0])
        await h.post(
            slash_command_body("/sign", slug, "USTRANGER", response_url=h.fake.response_url("u2"))
        )
        assert "signed" in reply_text((await h.replies("u2"))[0])
        assert count(h, slug) == 1


@pytest.mark.parametrize("case", ["bad", "stale", "missing"])
async def test_bad_and_stale_signatures_are_refused(db_url: str, tmp_path: Path, case: str) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h)
        body = slash_command_body("/sign", slug, "UABETZ", response_url=h.fake.response_url("x"))
        if case == "bad":
            status, _, _ = await h.post(body, secret="not-the-secret")
        elif case == "stale":
            status, _, _ = await h.post(body, timestamp=int(time.time()) - 301)
        else:
            assert h.http is not None
            async with h.http.post(h.url, data=body) as response:
                status = response.status
        assert status == 401
        await asyncio.sleep(0.2)
        assert count(h, slug) == 0 and h.fake.calls_to("response_url") == []


async def test_sign_button_confirms_before_recording(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h)
        await h.settle()
        (post,) = h.fake.calls_to("chat.postMessage")
        ts = post.response["ts"]
        await h.post(
            block_action_body(
                "cosign_sign", slug, "UABETZ", "C1", ts, response_url=h.fake.response_url("b1")
            )
        )
        (confirm,) = await h.replies("b1")
        assert "Sign “Candidacy of Hu Binchen" in reply_text(confirm)
        assert "as Senator Eric Abetz (Australia)?" in reply_text(confirm)
        assert count(h, slug) == 0  # nothing recorded until Confirm
        await h.post(
            block_action_body(
                "cosign_cancel", slug, "UABETZ", "C1", ts, response_url=h.fake.response_url("b0")
            )
        )
        assert "nothing was signed" in reply_text((await h.replies("b0"))[0])
        await h.post(
            block_action_body(
                "cosign_sign_confirm",
                slug,
                "UABETZ",
                "C1",
                ts,
                response_url=h.fake.response_url("b2"),
            )
        )
        (done,) = await h.replies("b2")
        assert "signed" in reply_text(done) and done.get("replace_original") is True
        assert count(h, slug) == 1
        await h.post(
            block_action_body(
                "cosign_withdraw", slug, "UABETZ", "C1", ts, response_url=h.fake.response_url("b3")
            )
        )
        assert "withdrawn" in reply_text((await h.replies("b3"))[0])
        assert count(h, slug) == 0


async def test_burst_of_50_concurrent_signs(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path, roster=burst_roster(50)) as h:
        slug = open_letter(h)
        await h.settle()
        bodies = [
            slash_command_body(
                "/sign", "", f"UB{i:04d}", response_url=h.fake.response_url(f"burst{i}")
            )
            for i in range(50)
        ]
        results = await asyncio.gather(*(h.post(body) for body in bodies))
        acks = sorted(elapsed for status, _, elapsed in results)
        assert all(status == 200 for status, _, _ in results)
        assert acks[-1] < 3.0, f"slowest ack {acks[-1]:.2f}s"
        for i in range(50):
            assert "signed" in reply_text((await h.replies(f"burst{i}"))[0])
        assert count(h, slug) == 50
        await h.settle()
        message = h.fake.messages_in("C1")[0]
        assert "50 signatures" in all_blocks_text(message)
        updates = h.fake.calls_to("chat.update")
        assert 1 <= len(updates) <= 5  # coalesced, not one per signature
        print(f"burst: 50 acks, median {acks[25] * 1000:.0f} ms, max {acks[-1] * 1000:.0f} ms")


async def test_letter_post_within_limits_and_long_letter_as_file(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        open_letter(h)
        paragraph = "This paragraph is long enough to need splitting. " * 40
        long_text = (
            LETTER.read_text(encoding="utf-8").replace(
                'slug = "interpol-2021"', 'slug = "long-letter"'
            )
            + ("\n\n" + paragraph) * 50
        )  # about 100 KB
        open_letter(h, channel="C2", text=long_text)
        await h.settle()
        posts = h.fake.calls_to("chat.postMessage")
        assert len(posts) == 2 and all(c.ok for c in posts)
        short = next(c for c in posts if c.args["channel"] == "C1")
        blocks = short.args["blocks"]
        assert blocks[0]["type"] == "header" and blocks[-1]["type"] == "actions"
        assert "Dear Ministers" in json.dumps(blocks)
        (upload,) = h.fake.files.values()
        assert upload.channel == "C2" or "C2" in (upload.channels or [])
        assert len(upload.content) > 100_000
        assert upload.content.decode().count("This paragraph is long") == 40 * 50
        assert all(not c.link_names for c in h.fake.calls)


async def test_rate_limited_posting_is_retried_and_nothing_is_lost(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        h.fake.rate_limit("chat.postMessage", times=5, retry_after=1)  # more than the SDK retries
        open_letter(h)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not h.fake.messages_in("C1"):
            await h.bot.deliverer.deliver_due()
            await asyncio.sleep(0.1)
        assert len(h.fake.messages_in("C1")) == 1
        limited = [c for c in h.fake.calls_to("chat.postMessage") if c.rate_limited]
        assert len(limited) == 5


async def test_hostile_names_ping_nobody(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h)
        await h.settle()
        ts = h.fake.calls_to("chat.postMessage")[0].response["ts"]
        await h.post(
            block_action_body(
                "cosign_sign", slug, "UEVIL", "C1", ts, response_url=h.fake.response_url("e1")
            )
        )
        confirm = (await h.replies("e1"))[0]
        await h.post(
            block_action_body(
                "cosign_sign_confirm",
                slug,
                "UEVIL",
                "C1",
                ts,
                response_url=h.fake.response_url("e2"),
            )
        )
        signed = (await h.replies("e2"))[0]
        await h.post(
            slash_command_body(
                "/cosign", f"status {slug}", "UADMIN", response_url=h.fake.response_url("e3")
            )
        )
        status = (await h.replies("e3"))[0]
        for payload in (confirm, signed, status):
            text = mrkdwn_text(payload)
            assert "<!channel>" not in text and "<!here>" not in text and "<@UABETZ>" not in text
            assert "<script>" not in text
        assert "&lt;!channel&gt;" in mrkdwn_text(status)
        assert "&lt;!channel&gt;" in mrkdwn_text(signed)
        assert "<!channel> <@UABETZ>" in all_blocks_text(confirm)  # plain_text shows it literally
        assert all(c.args.get("link_names") in (None, False, "false") for c in h.fake.calls)


async def test_deadline_compile_is_announced_and_buttons_removed(
    db_url: str, tmp_path: Path
) -> None:
    async with SlackHarness(db_url, tmp_path, scheduler=True) as h:
        slug = open_letter(h, deadline=timedelta(seconds=2))
        await h.settle()
        await h.post(
            slash_command_body("/sign", slug, "UABETZ", response_url=h.fake.response_url("d1"))
        )
        await h.replies("d1")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not h.fake.files:
            await asyncio.sleep(0.1)
        await h.settle()
        uploads = list(h.fake.files.values())
        assert {u.filename for u in uploads} == {f"{slug}.pdf", f"{slug}.txt", f"{slug}.html"}
        txt = next(u for u in uploads if u.filename.endswith(".txt"))
        assert "Senator Eric Abetz (Australia)" in txt.content.decode()
        assert all(u.channel == "CANNOUNCE" or "CANNOUNCE" in (u.channels or []) for u in uploads)
        # The coordinators' closing message witnesses the PDF's hash and the audit head (§10)
        pdf = next(u for u in uploads if u.filename.endswith(".pdf"))
        assert pdf.content.startswith(b"%PDF")
        with h.database.session() as session:
            letter = letters.get_letter(session, slug=slug)
            assert letter is not None and letter.id is not None
            compilation = letters.get_compilation(session, letter_pk=letter.id)
            assert compilation is not None and compilation.receipt is not None
            head = compilation.receipt["audit_head"]
        assert compilation.sha256["pdf"] == hashlib.sha256(pdf.content).hexdigest()
        (announced,) = [
            c for c in h.fake.calls_to("chat.postMessage") if c.args["channel"] == "CANNOUNCE"
        ]
        text = str(announced.args.get("text"))
        assert f"PDF SHA-256 {compilation.sha256['pdf']}" in text
        assert f"audit head {head['seq']}:{head['hash'][:16]}" in text
        summaries = [
            c
            for c in h.fake.calls_to("chat.postMessage")
            if c.args["channel"] == "C1" and "closed at" in str(c.args.get("text"))
        ]
        assert len(summaries) == 1
        message = h.fake.messages_in("C1")[0]
        kinds = [b["type"] for b in message["blocks"]]
        assert "actions" not in kinds and "1 signature" in all_blocks_text(message)


async def test_retried_events_are_handled_once(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h)
        await h.settle()
        event = {
            "type": "app_mention",
            "user": "UABETZ",
            "channel": "C1",
            "text": f"<@UBOT> sign {slug}",
            "ts": "1700000000.000200",
        }
        body = event_callback_body(event, event_id="Ev0001")
        first = await h.post(body, content_type="application/json")
        retry = await h.post(
            body,
            content_type="application/json",
            headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
        )
        assert first[0] == 200 and retry[0] == 200
        await h.fake.wait_for("chat.postEphemeral", 1)
        await asyncio.sleep(0.5)
        ephemerals = h.fake.calls_to("chat.postEphemeral")
        assert len(ephemerals) == 1 and "signed" in str(ephemerals[0].args.get("text"))
        assert count(h, slug) == 1


async def test_word_payload_in_a_command_is_understood(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        status, _, _ = await h.post(
            slash_command_body(
                "/sign", "payload-letter", "UABETZ", response_url=h.fake.response_url("q")
            )
        )
        assert status == 200
        assert "no letter called 'payload-letter'" in reply_text((await h.replies("q"))[0])


async def test_match_email_links_unknown_accounts(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path, match_email=True) as h:
        h.fake.add_user("UMAIL", "mail", email="Mail@Example.org")
        slug = open_letter(h)
        await h.post(
            slash_command_body("/sign", slug, "UMAIL", response_url=h.fake.response_url("m"))
        )
        assert "Mail Matched MP (Ireland)" in reply_text((await h.replies("m"))[0])


async def test_healthz(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        assert h.http is not None
        health = h.url.replace(h.settings.slack.path, "/healthz")
        async with h.http.get(health) as response:
            assert response.status == 200
            data = await response.json()
        assert data == {"database": "ok", "platforms": ["slack"]}


async def test_oversized_body_is_refused(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        body = slash_command_body("/sign", "x" * (1024 * 1024 + 10), "UABETZ")
        status, _, _ = await h.post(body)
        assert status == 413


async def test_long_title_is_shortened_in_the_header_and_shown_whole(
    db_url: str, tmp_path: Path
) -> None:
    title = "A very long title " * 12  # over 150 characters
    text = LETTER.read_text(encoding="utf-8").replace(
        'title = "Candidacy of Hu Binchen (P.R. China) to INTERPOL\'s Executive Committee"',
        f'title = "{title.strip()}"',
    )
    async with SlackHarness(db_url, tmp_path) as h:
        open_letter(h, text=text)
        await h.settle()
        (post,) = h.fake.calls_to("chat.postMessage")
        assert post.ok
        header, first = post.args["blocks"][0], post.args["blocks"][1]
        assert len(header["text"]["text"]) <= 150
        assert title.strip() in first["text"]["text"]


async def _signed_under_a_deleted_post(h: SlackHarness) -> str:
    """A letter whose post can no longer be edited, and a signature that makes it stale."""
    slug = open_letter(h)
    await h.settle()
    h.fake.fail("chat.update", error="message_not_found", times=100)
    await h.post(slash_command_body("/sign", slug, "UABETZ", response_url=h.fake.response_url("g")))
    await h.replies("g")
    return slug


async def test_counter_on_a_deleted_post_is_logged_and_left(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        slug = await _signed_under_a_deleted_post(h)
        await h.platform_counter_pass()
        await h.platform_counter_pass()
        assert len(h.fake.calls_to("chat.update")) == 1  # tried once, then left alone
        assert "cannot be edited (message_not_found)" in caplog.text
        assert count(h, slug) == 1


async def test_overlapping_counter_passes_edit_a_post_once(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        await _signed_under_a_deleted_post(h)
        # The bot's own counter loop may be mid-pass too: all of them together edit once.
        await asyncio.gather(*(h.platform_counter_pass() for _ in range(3)))
        assert len(h.fake.calls_to("chat.update")) == 1


async def test_unknown_commands_actions_and_replayed_requests(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h)
        status, _, _ = await h.post(
            slash_command_body("/frobnicate", "x", "UABETZ", response_url=h.fake.response_url("f"))
        )
        assert status == 200
        assert "Unknown command 'frobnicate'" in reply_text((await h.replies("f"))[0])
        status, _, _ = await h.post(
            block_action_body(
                "evil_action", slug, "UABETZ", "C1", response_url=h.fake.response_url("a")
            )
        )
        assert status == 200
        assert "ignored unknown action evil_action" in caplog.text
        body = slash_command_body("/sign", slug, "UABETZ", response_url=h.fake.response_url("r"))
        await h.post(body)
        status, text, _ = await h.post(body)  # the same signed request replayed within 5 minutes
        assert status == 200 and text == ""  # its trigger_id ran once: nothing runs or answers
        (first,) = await h.replies("r")
        assert reply_text(first).startswith("✅ You signed")
        await asyncio.sleep(0.2)
        assert len(await h.replies("r")) == 1
        assert count(h, slug) == 1
        await asyncio.sleep(0.2)
        assert [c for c in h.fake.calls_to("response_url") if c.path.endswith("/a")] == []
        assert "Traceback" not in caplog.text


async def test_the_answer_travels_in_the_acknowledgement(db_url: str, tmp_path: Path) -> None:
    """What a signer waits for is the reply that says "signed": it comes with the ack."""
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h)
        await h.settle()
        status, text, _ = await h.post(
            slash_command_body("/sign", slug, "UABETZ", response_url=h.fake.response_url("a"))
        )
        assert status == 200
        answer = json.loads(text)
        assert answer["response_type"] == "ephemeral"
        assert reply_text(answer).startswith("✅ You signed “*Candidacy of Hu Binchen")
        assert count(h, slug) == 1  # committed before the acknowledgement (rule 3)
        await asyncio.sleep(0.3)
        assert not [c for c in h.fake.calls_to("response_url") if c.path.endswith("/a")]


async def test_a_slow_command_is_journaled_acknowledged_and_answered_later(
    db_url: str, tmp_path: Path
) -> None:
    """answer_within 0: every command is acknowledged before it commits, and answered after."""
    async with SlackHarness(db_url, tmp_path, answer_within=0.0) as h:
        slug = open_letter(h)
        await h.settle()
        status, text, _ = await h.post(
            slash_command_body("/sign", slug, "UABETZ", response_url=h.fake.response_url("s"))
        )
        assert status == 200 and text == ""
        (answer,) = await h.replies("s")
        assert reply_text(answer).startswith("✅ You signed")
        assert count(h, slug) == 1
