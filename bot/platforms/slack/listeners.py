"""Slack requests in: slash commands, buttons and app mentions become Invocations.

A listener runs the command first and acknowledges after, within `[slack].answer_within`: a slash
command's answer travels in the acknowledgement itself (Slack shows it at once, the way a signer
waits for it), a button's or a mention's follows it through response_url or as an ephemeral
message. A command that takes longer is journaled, then acknowledged, and answered when it
commits (bot.platforms.slack.answers). The app runs with process_before_response, so nothing is
acknowledged before the listener says so; work after the acknowledgement runs in its own task.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import aiohttp
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import publishing, staff
from bot.core import Invocation, Reply, apology
from bot.platforms.base import render_reply
from bot.platforms.slack import blocks as kit
from bot.platforms.slack.answers import AnswerBook
from bot.platforms.slack.email_match import EmailMatcher
from bot.platforms.slack.outbound import join_channel
from bot.templating import escape_mrkdwn

if TYPE_CHECKING:
    from bot.config import SlackSettings
    from bot.runtime import Bot

log = logging.getLogger(__name__)

COMMANDS = ("sign", "unsign", "status", "letters", "cosign")
_MENTION = re.compile(r"^\s*<@[UW][A-Z0-9]+(?:\|[^>]*)?>\s*")

Respond = Callable[..., Awaitable[Any]]


_SHELL_SYNTAX = frozenset("'\"\\")


def split_args(text: str) -> list[str]:
    """Arguments as a shell splits them ("quoted words" stay one); without quotes or
    backslashes that is str.split, ~20× cheaper than shlex on every slash command."""
    if _SHELL_SYNTAX.isdisjoint(text):
        return text.split()
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


class SlackListeners:
    """The inbound half of SlackPlatform (a mixin: it shares the platform's client and bot)."""

    name: str
    config: SlackSettings
    client: AsyncWebClient | None
    _bot: Bot | None
    _http: aiohttp.ClientSession | None
    _email_matcher: EmailMatcher | None = None

    _answers: AnswerBook | None

    def _register(self, app: AsyncApp) -> None:
        app.command(re.compile(r"^/"))(self._on_command)  # unknown ones get "Unknown command"
        app.action(kit.SIGN_ACTION)(self._on_sign_button)
        app.action(kit.CONFIRM_ACTION)(self._on_confirm)
        app.action(kit.WITHDRAW_ACTION)(self._on_withdraw_button)
        app.action(kit.CANCEL_ACTION)(self._on_cancel)
        app.action(kit.RECONFIRM_ACTION)(self._on_reconfirm)
        app.action(re.compile(".*"))(self._on_unknown_action)  # registered last: a fallback
        app.event("app_mention")(self._on_mention)
        app.error(self._on_error)

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        log.error(
            "slack: unhandled error for %s", body.get("type") or body.get("command"), exc_info=error
        )

    async def _on_command(
        self, ack: Callable[..., Awaitable[object]], command: dict[str, Any]
    ) -> None:
        response_url = command.get("response_url", "")
        invocation = Invocation(
            platform=self.name,
            channel=command.get("channel_id", ""),
            user=command.get("user_id", ""),
            command=command.get("command", "/").lstrip("/"),
            args=split_args(command.get("text", "")),
            event_id=command.get("trigger_id", ""),
            display_name=command.get("user_name", ""),
            # answered in the acknowledgement when it commits in time: nothing owed after that
            reply_to=_reply_to(response_url, command.get("user_id", ""), "respond", inline=True),
        )
        replies = await self._run_before_ack(invocation, ack)
        if replies is None:
            return  # acknowledged without the answer, which follows when the command commits
        inline = _inline(replies)
        if inline is not None:
            await ack(**inline)
            if _is_post(invocation, replies):
                respond = self._responder(response_url)
                self._after_ack(self._membership_note(invocation, respond))
            return
        if self._answers is not None:
            await self._answers.keep(invocation)  # too long for the ack: owed until sent
        await ack()
        self._after_ack(self._answer(replies, invocation, self._responder(response_url)))

    async def answer_slash_command(self, fields: dict[str, str]) -> BoltResponse:
        """A verified slash command, run as Bolt would run `_on_command` and answered with what
        it acknowledged (Bolt's own AsyncAck builds the response). Bolt's dispatch (its request
        object, middleware chain, listener matching, a Web API client per request) cost a
        quarter of the acknowledging process's time under a burst of `/sign` (py-spy): that
        process is what a signer waits on (bench/slack_sign.py)."""
        ack = AsyncAck()
        try:
            await self._on_command(ack, fields)
        except Exception as exc:  # noqa: BLE001 - as Bolt: logged; 500 unless acknowledged
            await self._on_error(exc, fields)
            if ack.response is None:
                return BoltResponse(status=500, body="")
        return ack.response or BoltResponse(status=200, body="")

    async def _run_before_ack(
        self, invocation: Invocation, ack: Callable[..., Awaitable[object]]
    ) -> list[Reply] | None:
        """The command's replies if it committed within answer_within; else None, once it has
        been journaled and acknowledged (its answer then follows through response_url)."""
        task = asyncio.ensure_future(self._replies(invocation))
        # asyncio.wait, not wait_for(shield(…)): the same without two more futures a command
        done, _ = await asyncio.wait((task,), timeout=self.config.answer_within)
        if done:
            return task.result()
        if self._answers is not None and invocation.reply_to is not None:
            await self._answers.keep(invocation)
        await ack()
        respond = self._responder(str((invocation.reply_to or {}).get("response_url", "")))

        async def answer_later() -> None:
            await self._answer(await task, invocation, respond)

        self._after_ack(answer_later())
        return None

    async def _replies(self, invocation: Invocation) -> list[Reply]:
        assert self._bot is not None
        try:
            await self._link_by_email(invocation.user)
            return await self._bot.handle(invocation)
        except Exception as exc:  # noqa: BLE001 - answered with an error id, logged once
            return [apology(invocation, exc)]

    async def _answer(
        self,
        replies: list[Reply],
        invocation: Invocation,
        respond: Respond,
        *,
        replace: bool = False,
    ) -> None:
        """Send the replies after the acknowledgement, then record that they went out."""
        for reply in replies:
            await self._respond(reply, invocation, respond, replace=replace)
        if self._answers is not None and invocation.reply_to is not None:
            await self._answers.answered(invocation.event_id)
        if _is_post(invocation, replies):
            await self._membership_note(invocation, respond)

    def _after_ack(self, work: Awaitable[None]) -> None:
        if self._answers is not None:
            self._answers.spawn(work)
        else:
            asyncio.ensure_future(work)

    def _responder(self, response_url: str) -> Respond:
        """Answers through response_url on the platform's one HTTP session.

        Bolt's own `respond` opens a new session and connection per reply: under a burst of
        slash commands that was ~45 % of the event loop's time (bench/slack_sign.py, py-spy).
        """
        client = AsyncWebhookClient(url=response_url, session=self._http)

        async def respond(
            text: str = "",
            blocks: list[Any] | None = None,
            response_type: str | None = None,
            replace_original: bool | None = None,
            **_: Any,
        ) -> None:
            response = await client.send(
                text=text,
                blocks=blocks,
                response_type=response_type,
                replace_original=replace_original,
            )
            if response.status_code != 200:
                log.warning(
                    "slack: response_url answered %s: %s",
                    response.status_code,
                    str(response.body)[:200],
                )

        return respond

    async def _run(
        self,
        invocation: Invocation,
        respond: Respond,
        ack: Callable[..., Awaitable[None]],
        *,
        replace: bool = False,
    ) -> None:
        """A button or a mention: run, acknowledge, then answer (response_url / ephemeral)."""
        replies = await self._run_before_ack(invocation, ack)
        if replies is None:
            return
        await ack()
        self._after_ack(self._answer(replies, invocation, respond, replace=replace))

    async def _membership_note(self, invocation: Invocation, respond: Respond) -> None:
        """`/cosign post` where the bot cannot post: say so now, not just in the log.

        The post is queued either way. Joining now makes a public channel ready for the post and
        its files; `channel_not_found` means a private channel (or a conversation between others)
        the bot was not invited to: Slack hides those from it, and only an invitation helps.
        """
        assert self.client is not None
        if await join_channel(self.client, invocation.channel) != "channel_not_found":
            return
        await respond(
            text=(
                "I am not a member of this conversation, so I cannot post the letter here yet. "
                "In a private channel, invite me with `/invite @cosign`: the post follows within "
                "minutes (I keep trying, and coordinators get a direct message until it is "
                "posted)."
            ),
            response_type="ephemeral",
        )

    async def _respond(
        self, reply: Reply, invocation: Invocation, respond: Respond, *, replace: bool = False
    ) -> None:
        text = render_reply(reply, "mrkdwn")
        blocks = kit.text_blocks(text)
        kind = "in_channel" if reply.visibility == "public" else "ephemeral"
        if blocks is None:
            await self._send_long_reply(text, invocation, respond)
            return
        try:
            await respond(
                text=kit.fallback(text), blocks=blocks, response_type=kind, replace_original=replace
            )
        except Exception:
            log.exception("slack: could not answer %s from %s", invocation.command, invocation.user)

    async def _send_long_reply(self, text: str, invocation: Invocation, respond: Respond) -> None:
        """Too long for one message: a DM with the whole reply as a file, and a pointer."""
        assert self.client is not None
        try:
            opened = await self.client.conversations_open(users=invocation.user)
            channel = opened["channel"]["id"]
            await self.client.files_upload_v2(
                channel=channel,
                content=text,
                filename=f"cosign-{invocation.command}.txt",
                title=f"cosign {invocation.command}",
            )
            note = "The answer is long, so I sent it to you as a file in a direct message."
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("slack: long reply as a file failed: %s", exc)
            note = (
                "The answer is too long for Slack; use `cosign status SLUG --json` or "
                "`cosign compile` on the command line."
            )
        await respond(text=note, response_type="ephemeral")

    async def _link_by_email(self, user: str) -> None:
        if not self.config.match_email or self._bot is None or self.client is None:
            return
        if self._email_matcher is None:
            self._email_matcher = EmailMatcher(self.client, self._bot.database, self.name)
        await self._email_matcher.link(user)

    async def _on_sign_button(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]
    ) -> None:
        """Sign opens a confirmation naming the member; nothing is recorded until Confirm."""
        await ack()
        self._after_ack(self._confirm_sign(body))

    async def _confirm_sign(self, body: dict[str, Any]) -> None:
        respond = self._responder(body.get("response_url", ""))
        assert self._bot is not None
        slug = _action_value(body)
        user = (body.get("user") or {}).get("id", "")
        await self._link_by_email(user)
        choices = await asyncio.to_thread(
            staff.sign_choices, self._bot.database, platform=self.name, external_id=user
        )
        if not choices:
            # unknown account: the sign handler records the pending request; staff acting for
            # nobody: it says so
            invocation = self._button_invocation(body, "sign", slug)
            await self._answer(await self._replies(invocation), invocation, respond)
            return
        # read only: a Sign click in a channel the letter was not posted to adds no post there
        letter = await asyncio.to_thread(publishing.letter_view, self._bot.database, slug=slug)
        title = letter.title if letter else slug
        as_staff = bool(choices[0].for_id)  # staff: one question per member they act for
        blocks = kit.confirm_blocks(
            slug,
            choices[0].label,
            title,
            for_members=[(c.for_id, c.label) for c in choices] if as_staff else (),
            typed_for=f"/sign {slug} for MEMBER_ID",
        )
        question = kit.confirm_question(title, choices[0].label, as_staff=as_staff)
        if len(choices) > 1:
            question = f"Sign “{title}” as staff for: {', '.join(c.label for c in choices)}?"
        await respond(
            text=escape_mrkdwn(question),
            blocks=blocks,
            response_type="ephemeral",
            replace_original=False,
        )

    async def _on_confirm(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        respond = self._responder(body.get("response_url", ""))
        invocation = self._button_invocation(body, "sign", _action_value(body), replace=True)
        await self._run(invocation, respond, ack, replace=True)

    async def _on_withdraw_button(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]
    ) -> None:
        respond = self._responder(body.get("response_url", ""))
        invocation = self._button_invocation(body, "unsign", _action_value(body))
        await self._run(invocation, respond, ack)

    async def _on_reconfirm(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]
    ) -> None:
        """Re-confirm, in the direct message a signer gets after a material change (DESIGN.md
        §9): the click is the deliberate act, as typing `/sign` is, so it runs `sign VALUE` at
        once as the clicking user, journaled and answered after commit like Confirm. The click
        comes from the IM, where no letter is posted: the value names the letter (and, for
        staff, the member), and the DM's ts is no thread to look a letter up by. The answer is
        a new message; the DM with the diff stays."""
        respond = self._responder(body.get("response_url", ""))
        invocation = self._button_invocation(body, "sign", _action_value(body), thread=False)
        await self._run(invocation, respond, ack)

    async def _on_cancel(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        respond = self._responder(body.get("response_url", ""))
        self._after_ack(
            respond(
                text="Cancelled; nothing was signed.",
                response_type="ephemeral",
                replace_original=True,
            )
        )

    async def _on_unknown_action(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]
    ) -> None:
        await ack()
        log.warning("slack: ignored unknown action %s", _action_id(body))

    def _button_invocation(
        self,
        body: dict[str, Any],
        command: str,
        slug: str,
        *,
        replace: bool = False,
        thread: bool = True,
    ) -> Invocation:
        user = body.get("user") or {}
        reply_to = _reply_to(body.get("response_url", ""), user.get("id", ""), "respond")
        if replace:
            reply_to["replace_original"] = True
        return Invocation(
            platform=self.name,
            channel=_channel(body),
            user=user.get("id", ""),
            command=command,
            args=split_args(slug),  # a Confirm for staff carries `SLUG for MEMBER_ID`
            thread=(body.get("container") or {}).get("message_ts") if thread else None,
            event_id=body.get("trigger_id", ""),
            display_name=user.get("username") or user.get("name") or "",
            reply_to=reply_to,
        )

    async def _on_mention(
        self, ack: Callable[..., Awaitable[None]], body: dict[str, Any], event: dict[str, Any]
    ) -> None:
        """`@cosign sign` in a channel or in a letter's thread.

        Slack retries an event it thinks failed (X-Slack-Retry-Num): the journal runs it once
        (its event_id is claimed in the command's own transaction) and answers it once.
        """
        words = split_args(_MENTION.sub("", event.get("text", ""), count=1))
        if not words or words[0].lower().lstrip("/!") not in COMMANDS:
            words = ["help"]
        channel, user = event.get("channel", ""), event.get("user", "")
        thread = event.get("thread_ts")
        invocation = Invocation(
            platform=self.name,
            channel=channel,
            user=user,
            command=words[0].lower().lstrip("/!"),
            args=words[1:],
            thread=thread,
            event_id=body.get("event_id", ""),
            reply_to={"ephemeral": True, "channel": channel, "user": user, "thread": thread},
        )
        await self._run(invocation, self.ephemeral_responder(channel, user, thread), ack)

    def ephemeral_responder(self, channel: str, user: str, thread: str | None) -> Respond:
        async def respond(text: str, blocks: list[Any] | None = None, **_: Any) -> None:
            assert self.client is not None
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, blocks=blocks, thread_ts=thread
            )

        return respond

    async def deliver_owed(
        self, replies: list[Reply], invocation: Invocation | None, reply_to: dict[str, Any]
    ) -> None:
        """Send what the journal says is owed (AnswerBook.recover), as the live path would."""
        if reply_to.get("ephemeral"):
            channel, user = str(reply_to.get("channel", "")), str(reply_to.get("user", ""))
            respond = self.ephemeral_responder(channel, user, reply_to.get("thread"))
        else:
            respond = self._responder(str(reply_to.get("response_url", "")))
        target = invocation or Invocation(
            platform=self.name,
            channel=str(reply_to.get("channel", "")),
            user=str(reply_to.get("user", "")),
            command=str(reply_to.get("command", "sign")),
        )
        for reply in replies:
            await self._respond(
                reply, target, respond, replace=bool(reply_to.get("replace_original"))
            )


# --- request helpers ---------------------------------------------------------------------------


def _reply_to(response_url: str, user: str, kind: str, *, inline: bool = False) -> dict[str, Any]:
    """What a restarted bot needs to answer: the response_url (30 minutes, 5 uses) and who."""
    return {"response_url": response_url, "user": user, "via": kind, "inline": inline}


def _inline(replies: list[Reply]) -> dict[str, Any] | None:
    """The acknowledgement's body for a slash command's replies, if they fit in one message."""
    if len(replies) != 1:
        return None if replies else {}
    text = render_reply(replies[0], "mrkdwn")
    blocks = kit.text_blocks(text)
    if blocks is None:
        return None  # too long: it goes as a file in a direct message, after the ack
    kind = "in_channel" if replies[0].visibility == "public" else "ephemeral"
    return {"text": kit.fallback(text), "blocks": blocks, "response_type": kind}


def _is_post(invocation: Invocation, replies: list[Reply]) -> bool:
    """A coordinator's `/cosign post SLUG` that was accepted (the letter is queued here)."""
    args = invocation.args
    return (
        invocation.command == "cosign"
        and bool(args)
        and args[0].lower() == "post"
        and any(reply.template == "replies/posted.j2" for reply in replies)
    )


def _action_value(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value") or "")


def _action_id(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("action_id") or "")[:100]


def _channel(body: dict[str, Any]) -> str:
    channel = body.get("channel") or {}
    return str(channel.get("id") or (body.get("container") or {}).get("channel_id") or "")


def slash_command_fields(raw: str, content_type: str) -> dict[str, str] | None:
    """A slash command's form fields, or None for anything else (events and interactions are
    JSON or carry `payload`; an `ssl_check` has no command): those go through Bolt."""
    if not content_type.startswith("application/x-www-form-urlencoded") or "command=" not in raw:
        return None
    fields = dict(parse_qsl(raw, keep_blank_values=True))
    if "payload" in fields or "ssl_check" in fields:
        return None
    return fields if fields.get("command", "").startswith("/") else None


def repair_form_body(request: AsyncBoltRequest) -> None:
    """slack-bolt parses a form body that merely *contains* "payload" (say, `/sign payloads`) as {}.

    Slash commands are form bodies without a `payload` field: re-parse those ourselves. The raw
    body (and so the signature check) is untouched.
    """
    raw = request.raw_body
    if request.body or not raw or raw.startswith("{") or "payload" not in raw:
        return
    fields = dict(parse_qsl(raw, keep_blank_values=True))
    if "payload" in fields:
        return
    request.body = fields
    request.context = build_async_context(AsyncBoltContext({}), fields)
