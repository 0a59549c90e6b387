"""Tests of the fake Slack harness itself, driven by the real slack-sdk and slack-bolt clients.

Why: every Slack test of the bot trusts tests/fakeslack.py; these prove it answers the way the
real clients expect (errors, 429 retries, uploads, Socket Mode acks, signed HTTP requests).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import pytest_asyncio
from fakeslack import (
    DEFAULT_SECRET,
    FORM_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    FakeSlack,
    block_action_body,
    event_callback_body,
    sign_request,
    slash_command_body,
    slash_command_payload,
    view_submission_body,
)
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


def client_for(fake: FakeSlack, token: str | None = None, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=token or fake.token, base_url=fake.api_url, **kwargs)


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


@pytest.mark.asyncio
async def test_post_then_update_round_trip(fake: FakeSlack) -> None:
    client = client_for(fake)
    posted = await client.chat_postMessage(
        channel="C1", text="Letter: 0 signatures", blocks=[section("*Letter*")]
    )
    assert posted["ok"] and posted["channel"] == "C1"
    ts = posted["ts"]
    assert posted["message"]["text"] == "Letter: 0 signatures"

    second = await client.chat_postMessage(channel="C1", text="another")
    assert float(second["ts"]) > float(ts) and second["ts"] != ts

    updated = await client.chat_update(
        channel="C1", ts=ts, text="Letter: 1 signature", blocks=[section("*Letter* (1)")]
    )
    assert updated["ok"] and updated["ts"] == ts and updated["text"] == "Letter: 1 signature"

    current = fake.messages[("C1", ts)]
    assert current["text"] == "Letter: 1 signature"
    assert current["blocks"][0]["text"]["text"] == "*Letter* (1)"
    assert "edited" in current
    # chat.postMessage with blocks goes out as JSON; the bot token travels in the header.
    call = fake.calls_to("chat.postMessage")[0]
    assert (call.header("content-type") or "").startswith("application/json")
    assert call.header("authorization") == f"Bearer {fake.token}"
    assert [m["ts"] for m in fake.messages_in("C1")] == [ts, second["ts"]]

    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel="C1", ts="1.000000", text="nope")
    assert err.value.response["error"] == "message_not_found"

    await client.chat_delete(channel="C1", ts=ts)
    assert ("C1", ts) not in fake.messages
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel="C1", ts=ts, text="gone")
    assert err.value.response["error"] == "message_not_found"


@pytest.mark.asyncio
async def test_51_blocks_is_invalid_blocks(fake: FakeSlack) -> None:
    client = client_for(fake)
    await client.chat_postMessage(channel="C1", text="ok", blocks=[section("x")] * 50)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C1", text="too many", blocks=[section("x")] * 51)
    assert err.value.response.status_code == 200
    assert err.value.response["error"] == "invalid_blocks"
    assert fake.calls_to("chat.postMessage")[-1].error == "invalid_blocks"
    assert len(fake.messages) == 1


@pytest.mark.parametrize(
    ("blocks", "text", "error"),
    [
        ([section("x" * 3001)], "t", "invalid_blocks"),
        (
            [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            "t",
            "invalid_blocks",
        ),
        ([{"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}], "t", "invalid_blocks"),
        ([section("x", block_id="b" * 256)], "t", "invalid_blocks"),
        ([section("x", block_id="same"), section("y", block_id="same")], "t", "invalid_blocks"),
        ([section("")], "t", "invalid_blocks"),
        ([{"type": "sektion", "text": {"type": "mrkdwn", "text": "x"}}], "t", "invalid_blocks"),
        (None, "x" * 40001, "msg_too_long"),
        (None, None, "no_text"),
    ],
)
@pytest.mark.asyncio
async def test_documented_limits(
    fake: FakeSlack, blocks: list[dict[str, Any]] | None, text: str | None, error: str
) -> None:
    client = client_for(fake)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C1", text=text, blocks=blocks)
    assert err.value.response["error"] == error
    # The limits are exactly at the boundary: one character less is accepted.
    ok_blocks = [
        section("x" * 3000, block_id="b" * 255),
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
    ]
    assert (await client.chat_postMessage(channel="C1", text="x" * 40000, blocks=ok_blocks))["ok"]


@pytest.mark.asyncio
async def test_limits_apply_to_update_and_ephemeral(fake: FakeSlack) -> None:
    client = client_for(fake)
    ts = (await client.chat_postMessage(channel="C1", text="t"))["ts"]
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel="C1", ts=ts, text="t", blocks=[section("x" * 3001)])
    assert err.value.response["error"] == "invalid_blocks"
    assert fake.messages[("C1", ts)]["text"] == "t"
    with pytest.raises(SlackApiError) as err:
        await client.chat_postEphemeral(channel="C1", user="U1", text="x" * 40001)
    assert err.value.response["error"] == "msg_too_long"
    eph = await client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert eph["ok"] and eph["message_ts"]
    assert fake.ephemeral[-1]["user"] == "U1" and fake.ephemeral[-1]["text"] == "only you"


@pytest.mark.asyncio
async def test_no_text_and_link_names_are_flagged(fake: FakeSlack) -> None:
    client = client_for(fake)
    await client.chat_postMessage(channel="C1", blocks=[section("only blocks")])
    await client.chat_postMessage(channel="C1", text="hi @channel", link_names=True)
    await client.chat_postMessage(channel="C1", text="fine", link_names=False)
    first, second, third = fake.calls_to("chat.postMessage")
    assert first.ok and first.no_text and not first.link_names
    assert second.ok and second.link_names and not second.no_text
    assert third.ok and not third.link_names and not third.no_text


@pytest.mark.asyncio
async def test_429_is_retried_after_retry_after(fake: FakeSlack) -> None:
    fake.rate_limit("chat.postMessage", times=2, retry_after=1)
    client = client_for(fake, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)])
    started = time.monotonic()
    result = await client.chat_postMessage(channel="C1", text="eventually")
    elapsed = time.monotonic() - started
    assert result["ok"]
    calls = fake.calls_to("chat.postMessage")
    assert [c.rate_limited for c in calls] == [True, True, False]
    assert [c.status for c in calls] == [429, 429, 200]
    assert calls[0].response == {"ok": False, "error": "ratelimited"}
    gaps = [b.at - a.at for a, b in zip(calls, calls[1:], strict=False)]
    # slack-sdk sleeps Retry-After plus up to 1 s of jitter before each retry.
    assert all(1.0 <= gap < 2.5 for gap in gaps), gaps
    assert 2.0 <= elapsed < 5.0
    assert len(fake.messages) == 1


@pytest.mark.asyncio
async def test_429_surfaces_without_retry_handler(fake: FakeSlack) -> None:
    fake.rate_limit("users.info", times=1, retry_after=7)
    fake.add_user("U2", "bob", "Bob Builder", "bob@example.org")
    client = client_for(fake)
    with pytest.raises(SlackApiError) as err:
        await client.users_info(user="U2")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "7"
    assert err.value.response["error"] == "ratelimited"
    assert (await client.users_info(user="U2"))["user"]["profile"]["email"] == "bob@example.org"


@pytest.mark.asyncio
async def test_fail_injection_then_recovery(fake: FakeSlack) -> None:
    fake.fail("chat.postMessage", error="channel_not_found", times=1)
    client = client_for(fake)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C1", text="x")
    assert err.value.response["error"] == "channel_not_found"
    assert (await client.chat_postMessage(channel="C1", text="x"))["ok"]


@pytest.mark.asyncio
async def test_files_upload_v2_stores_the_file(fake: FakeSlack) -> None:
    client = client_for(fake)
    content = "Dear colleagues,\n" + "We the undersigned… " * 500
    result = await client.files_upload_v2(
        channel="C1",
        content=content,
        filename="letter.md",
        title="Open letter",
        initial_comment="Full text attached",
    )
    assert result["ok"]
    file_id = result["file"]["id"]
    stored = fake.files[file_id]
    assert stored.content == content.encode()
    assert stored["title"] == "Open letter" and stored.filename == "letter.md"
    assert stored.channel == "C1" and stored.initial_comment == "Full text attached"
    assert [c.method for c in fake.calls] == [
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]
    # The upload POST carries no token, as with Slack's real upload URLs.
    assert fake.calls[1].header("authorization") is None
    shared = fake.messages_in("C1")
    assert shared[-1]["text"] == "Full text attached" and shared[-1]["files"][0]["id"] == file_id

    with pytest.raises(SlackApiError) as err:
        await client.files_completeUploadExternal(
            files=[{"id": file_id, "title": "x"}], initial_comment="no channel"
        )
    assert err.value.response["error"] == "invalid_arguments"


@pytest.mark.asyncio
async def test_auth_is_enforced(fake: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as err:
        await client_for(fake, token="xoxb-stolen").chat_postMessage(channel="C1", text="x")
    assert err.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as err:
        await AsyncWebClient(base_url=fake.api_url).auth_test()
    assert err.value.response["error"] == "not_authed"
    with pytest.raises(SlackApiError) as err:
        await client_for(fake, token=fake.app_token).chat_postMessage(channel="C1", text="x")
    assert err.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as err:
        await client_for(fake).apps_connections_open(app_token=fake.token)
    assert err.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as err:
        await client_for(fake).api_call("chat.makeCoffee")
    assert err.value.response["error"] == "unknown_method"
    assert fake.messages == {}
    assert all(not c.ok for c in fake.calls)

    me = await client_for(fake).auth_test()
    assert (me["team_id"], me["user_id"], me["bot_id"]) == ("T1", "UBOT", "B1")
    assert me["url"].endswith(".slack.com/")


@pytest.mark.asyncio
async def test_users_channels_and_views(fake: FakeSlack) -> None:
    client = client_for(fake)
    fake.users["U9"] = {
        "id": "U9",
        "name": "rep",
        "real_name": "Rep. Nine",
        "profile": {"email": "nine@example.org"},
    }
    assert (await client.users_info(user="U9"))["user"]["real_name"] == "Rep. Nine"
    with pytest.raises(SlackApiError) as err:
        await client.users_info(user="U404")
    assert err.value.response["error"] == "user_not_found"
    assert (await client.conversations_info(channel="C1"))["channel"]["name"] == "general"
    with pytest.raises(SlackApiError) as err:
        await client.conversations_info(channel="C404")
    assert err.value.response["error"] == "channel_not_found"

    view = {
        "type": "modal",
        "callback_id": "sign",
        "title": {"type": "plain_text", "text": "Sign"},
        "blocks": [section("Sign?")],
    }
    opened = await client.views_open(trigger_id="123.456.abc", view=view)
    assert opened["view"]["id"] in fake.views
    with pytest.raises(SlackApiError) as err:
        await client.views_open(trigger_id="123.456.abc", view=view)
    assert err.value.response["error"] == "exchanged_trigger_id"
    long_title = {**view, "title": {"type": "plain_text", "text": "x" * 25}}
    with pytest.raises(SlackApiError) as err:
        await client.views_open(trigger_id="789", view=long_title)
    assert err.value.response["error"] == "invalid_arguments"


@pytest.mark.asyncio
async def test_response_url_is_recorded_and_checked(fake: FakeSlack) -> None:
    client = client_for(fake)
    ts = (await client.chat_postMessage(channel="C1", text="Sign?"))["ts"]
    url = fake.response_url("tok1", channel="C1", message_ts=ts)
    from slack_sdk.webhook.async_client import AsyncWebhookClient

    hook = AsyncWebhookClient(url)
    resp = await hook.send(text="Signed ✔", replace_original=True)
    assert (resp.status_code, resp.body) == (200, "ok")
    assert fake.messages[("C1", ts)]["text"] == "Signed ✔"
    bad = await hook.send(text="x", blocks=[section("x")] * 51)
    assert (bad.status_code, bad.body) == (400, "invalid_blocks")
    calls = fake.calls_to("response_url")
    assert (
        len(calls) == 2 and calls[0].path.endswith("/tok1") and calls[1].error == "invalid_blocks"
    )


@pytest.mark.asyncio
async def test_signed_http_requests_dispatch_through_bolt(fake: FakeSlack) -> None:
    """The payload builders and sign_request produce what bolt accepts from Slack."""
    app = AsyncApp(client=client_for(fake), signing_secret=DEFAULT_SECRET)
    seen: dict[str, Any] = {}

    @app.command("/sign")
    async def on_sign(ack: Any, command: dict[str, Any], respond: Any) -> None:
        seen["command"] = command
        await ack()
        await respond(text="Thanks", response_type="ephemeral")

    @app.action("approve")
    async def on_approve(ack: Any, body: dict[str, Any], respond: Any) -> None:
        seen["action"] = body
        await ack()
        await respond(text="Co-signed", replace_original=True)

    @app.view("sign_modal")
    async def on_view(ack: Any, view: dict[str, Any]) -> None:
        seen["view"] = view
        await ack()

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any]) -> None:
        seen["event"] = event

    async def dispatch(body: bytes, content_type: str, secret: str = DEFAULT_SECRET) -> int:
        headers: dict[str, str | Sequence[str]] = {
            "Content-Type": content_type,
            **sign_request(secret, body),
        }
        verifier = SignatureVerifier(secret)
        assert verifier.is_valid_request(body, {k: str(v) for k, v in headers.items()})
        response = await app.async_dispatch(AsyncBoltRequest(body=body.decode(), headers=headers))
        return response.status

    body = slash_command_body(text="letter-42 <!channel>", response_url=fake.response_url("cmd"))
    assert await dispatch(body, FORM_CONTENT_TYPE) == 200
    assert seen["command"]["text"] == "letter-42 <!channel>"
    assert set(slash_command_payload()) >= {
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "is_enterprise_install",
        "response_url",
        "trigger_id",
    }
    await fake.wait_for("response_url")
    assert fake.ephemeral[-1]["text"] == "Thanks"
    assert await dispatch(body, FORM_CONTENT_TYPE, secret="wrong") == 401

    ts = (await client_for(fake).chat_postMessage(channel="C1", text="Sign?"))["ts"]
    url = fake.response_url("act", channel="C1", message_ts=ts)
    body = block_action_body(
        "approve",
        "letter-42",
        message_ts=ts,
        response_url=url,
        block_id="sign_block",
        message=fake.messages[("C1", ts)],
    )
    assert await dispatch(body, FORM_CONTENT_TYPE) == 200
    assert seen["action"]["actions"][0]["value"] == "letter-42"
    assert seen["action"]["container"]["message_ts"] == ts
    await fake.wait_for("response_url", count=2)
    assert fake.messages[("C1", ts)]["text"] == "Co-signed"

    values = {"name": {"name_input": {"type": "plain_text_input", "value": "Rep. A"}}}
    assert (
        await dispatch(view_submission_body("sign_modal", values=values), FORM_CONTENT_TYPE) == 200
    )
    assert seen["view"]["state"]["values"]["name"]["name_input"]["value"] == "Rep. A"

    event = {
        "type": "app_mention",
        "user": "U1",
        "text": "<@UBOT> sign",
        "channel": "C1",
        "ts": "1700000001.000100",
        "event_ts": "1700000001.000100",
    }
    body = event_callback_body(event)
    assert json.loads(body)["event_id"] != json.loads(event_callback_body(event))["event_id"]
    assert await dispatch(body, JSON_CONTENT_TYPE) == 200
    for _ in range(100):
        if "event" in seen:
            break
        await asyncio.sleep(0.01)
    assert seen["event"]["text"] == "<@UBOT> sign"
    assert len(fake.calls_to("auth.test")) >= 1


@pytest.mark.asyncio
async def test_socket_mode_slash_command_is_acked(fake: FakeSlack) -> None:
    app = AsyncApp(client=client_for(fake), signing_secret="unused-in-socket-mode")

    @app.command("/sign")
    async def on_sign(ack: Any, command: dict[str, Any], respond: Any) -> None:
        await ack(text=f"Signing {command['text']}…")
        await respond(text="Done", response_type="in_channel")

    handler = AsyncSocketModeHandler(app, app_token=fake.app_token)
    sm = fake.socket_mode
    try:
        await handler.connect_async()  # type: ignore[no-untyped-call]
        await sm.wait_connected()
        assert fake.calls_to("apps.connections.open")[0].header("authorization") == (
            f"Bearer {fake.app_token}"
        )
        url = fake.response_url("sm", channel="C1")
        payload = slash_command_payload(text="letter-7", response_url=url)
        envelope_id = await sm.send_envelope(type="slash_commands", payload=payload)
        ack = await sm.wait_ack(envelope_id, timeout=5)
        assert ack == {"envelope_id": envelope_id, "payload": {"text": "Signing letter-7…"}}
        assert sm.sent[-1]["accepts_response_payload"] is True
        await fake.wait_for("response_url")
        assert fake.messages_in("C1")[-1]["text"] == "Done"

        # Slack asks clients to reconnect every few hours; the client must come back.
        await sm.send_disconnect()
        await sm.wait_connected(count=2)
        envelope_id = await sm.send_envelope(type="slash_commands", payload=payload)
        assert (await sm.wait_ack(envelope_id))["envelope_id"] == envelope_id
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]


def test_sign_request_matches_slack_sdk() -> None:
    body = slash_command_body(text="letter-1")
    headers = sign_request("s3cret", body, timestamp=1_700_000_000)
    assert headers["X-Slack-Request-Timestamp"] == "1700000000"
    expected = SignatureVerifier("s3cret").generate_signature(timestamp="1700000000", body=body)
    assert headers["X-Slack-Signature"] == expected
    # Slack's 5-minute replay window: a request signed with an old timestamp is refused.
    assert not SignatureVerifier("s3cret").is_valid_request(body, headers)
    assert SignatureVerifier("s3cret").is_valid_request(body, sign_request("s3cret", body))


@pytest.mark.asyncio
async def test_bolt_quirk_word_payload_in_form_body(fake: FakeSlack) -> None:
    """Documents a slack-bolt 1.30 quirk the bot must live with in HTTP mode.

    bolt's parse_body treats any form body containing the substring "payload" as an interaction
    (``payload=...``) and, finding no such field, parses it to ``{}``: a slash command whose text
    (or channel/user name) contains "payload" is unhandled (404, never acked). Socket Mode is not
    affected. If this test starts failing, bolt fixed it.
    """
    app = AsyncApp(client=client_for(fake), signing_secret=DEFAULT_SECRET)

    @app.command("/sign")
    async def on_sign(ack: Any) -> None:
        await ack()

    statuses = []
    for text in ("letter 1", "the payload of letter 1"):
        body = slash_command_body(text=text)
        headers: dict[str, str | Sequence[str]] = {
            "Content-Type": FORM_CONTENT_TYPE,
            **sign_request(DEFAULT_SECRET, body),
        }
        response = await app.async_dispatch(AsyncBoltRequest(body=body.decode(), headers=headers))
        statuses.append(response.status)
    assert statuses == [200, 404]


async def _slack_error(call: Any) -> str:
    with pytest.raises(SlackApiError) as err:
        await call
    return str(err.value.response["error"])


@pytest.mark.asyncio
async def test_membership_rules_for_posts_uploads_and_joins(fake: FakeSlack) -> None:
    """chat:write.public covers chat.postMessage to public channels only; uploads need
    membership; conversations.join joins public channels; private ones need an invitation."""
    client = client_for(fake)
    fake.add_channel("CPUB", "members")
    fake.add_channel("CPRIV", "secretariat", private=True)
    assert (await client.chat_postMessage(channel="CPUB", text="hi"))["ok"]
    upload = client.files_upload_v2(channel="CPUB", content="x", filename="x.txt")
    assert await _slack_error(upload) == "not_in_channel"
    assert await _slack_error(client.chat_postMessage(channel="CPRIV", text="hi")) == (
        "channel_not_found"
    )
    assert await _slack_error(client.conversations_join(channel="CPRIV")) == "channel_not_found"

    joined = await client.conversations_join(channel="CPUB")
    assert joined["ok"] and joined["channel"]["is_member"] is True and "warning" not in joined
    assert (await client.conversations_join(channel="CPUB"))["warning"] == "already_in_channel"
    await client.files_upload_v2(channel="CPUB", content="x", filename="x.txt")
    assert [u.channel for u in fake.files.values() if u.completed] == ["CPUB"]

    fake.invite_bot("CPRIV")
    assert (await client.chat_postMessage(channel="CPRIV", text="hi"))["ok"]
    await client.files_upload_v2(channel="CPRIV", content="y", filename="y.txt")
    assert await _slack_error(client.conversations_join(channel="CPRIV")) == (
        "method_not_supported_for_channel_type"
    )
    # completeUploadExternal's channel_id takes conversation ids, not user ids
    dm = client.files_upload_v2(channel="U1", content="z", filename="z.txt")
    assert await _slack_error(dm) == "invalid_arguments"


@pytest.mark.asyncio
async def test_installed_manifest_decides_scopes_and_dm_visibility(fake: FakeSlack) -> None:
    client = client_for(fake)
    fake.add_channel("CPUB", "members")
    fake.add_user("U1", "alice")
    await client.chat_postMessage(channel="U1", text="before install")
    assert len(fake.dms_readable_by("U1")) == 1  # no manifest: everything allowed
    fake.install({"oauth_config": {"scopes": {"bot": ["chat:write"]}}, "features": {}})
    assert await _slack_error(client.conversations_join(channel="CPUB")) == "missing_scope"
    assert await _slack_error(client.chat_postMessage(channel="CPUB", text="x")) == (
        "not_in_channel"  # without chat:write.public
    )
    await client.chat_postMessage(channel="U1", text="no messages tab")
    assert fake.dms_readable_by("U1") == []  # accepted by Slack, read by nobody
    fake.install(
        {
            "oauth_config": {"scopes": {"bot": ["chat:write", "chat:write.public"]}},
            "features": {"app_home": {"messages_tab_enabled": True}},
        }
    )
    assert (await client.chat_postMessage(channel="CPUB", text="x"))["ok"]
    assert [m["text"] for m in fake.dms_readable_by("U1")] == ["before install", "no messages tab"]


@pytest.mark.asyncio
async def test_a_pdf_goes_into_a_dm_by_its_conversation_id_only(fake: FakeSlack) -> None:
    """What the copies of a published letter rely on: conversations.open gives the D… id that
    files.completeUploadExternal takes (a U… id is refused), the bytes arrive as uploaded and
    show as a PDF; a deactivated user cannot be messaged (documented: user_disabled)."""
    client = client_for(fake)
    fake.add_user("U1", "alice")
    fake.add_user("UGONE", "gone", deleted=True)
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 8
    refused = client.files_upload_v2(channel="U1", content=pdf, filename="letter.pdf")
    assert await _slack_error(refused) == "invalid_arguments"
    im = (await client.conversations_open(users="U1"))["channel"]["id"]
    result = await client.files_upload_v2(
        channel=im, content=pdf, filename="letter.pdf", initial_comment="your copy"
    )
    (shared,) = result["files"]
    assert shared["mimetype"] == "application/pdf" and shared["ims"] == [im]
    assert fake.files[shared["id"]].content == pdf
    (message,) = fake.dms_readable_by("U1")
    assert message["text"] == "your copy" and message["files"][0]["id"] == shared["id"]
    assert await _slack_error(client.conversations_open(users="UGONE")) == "user_disabled"
