"""Slash commands answered without Bolt's dispatch (the acknowledging process's hot path):
the same answers as through Bolt, Bolt's checks kept (signatures: tests/test_slack.py), and
everything that is not a slash command still goes through Bolt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakeslack import slash_command_body
from helpers import reply_kind
from slack_support import SlackHarness, reply_text
from test_slack import count, open_letter

from bot.platforms.slack.listeners import slash_command_fields

COMMANDS = [
    ("/cosign", "help"),
    ("/nosuch", ""),
    ("/sign", "no-such-letter"),
    ("/cosign", "pending"),  # a coordinator command: refused
    ("/letters", ""),
]


def _answer(text: str) -> dict[str, Any]:
    return json.loads(text) if text.startswith("{") else {"plain": text}


async def test_direct_answers_are_bolts_answers(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h)
        verifier = h.platform._verifier
        direct: list[tuple[int, dict[str, Any]]] = []
        through_bolt: list[tuple[int, dict[str, Any]]] = []
        for answers in (direct, through_bolt):
            for command, text in COMMANDS:
                status, body, _ = await h.post(
                    slash_command_body(command, text, "UABETZ", response_url=h.fake.response_url())
                )
                answers.append((status, _answer(body)))
            h.platform._verifier = None  # the same requests through Bolt's dispatch
        assert direct == through_bolt
        assert all(status == 200 for status, _ in direct)
        assert direct[0][1]["response_type"] == "ephemeral" and "blocks" in direct[0][1]
        # and the hot path itself: a signature through each, each answered "signed" inline
        h.platform._verifier = verifier
        for user in ("UABETZ", "UALTON"):
            status, body, _ = await h.post(
                slash_command_body("/sign", slug, user, response_url=h.fake.response_url())
            )
            assert status == 200 and reply_kind(reply_text(json.loads(body))) == "signed", body
            h.platform._verifier = None
        assert count(h, slug) == 2


async def test_a_command_that_fails_before_its_ack_is_a_500(db_url: str, tmp_path: Path) -> None:
    async with SlackHarness(db_url, tmp_path) as h:
        slug = open_letter(h)

        async def broken(*_: object) -> None:
            raise RuntimeError("a bug before the ack")

        h.platform._run_before_ack = broken  # type: ignore[method-assign]
        status, _, _ = await h.post(
            slash_command_body("/sign", slug, "UABETZ", response_url=h.fake.response_url())
        )
        assert status == 500 and count(h, slug) == 0


@pytest.mark.parametrize(
    ("body", "content_type", "direct"),
    [
        (b"command=%2Fsign&text=x&user_id=U1", "application/x-www-form-urlencoded", True),
        (b"ssl_check=1&token=x&command=%2Fsign", "application/x-www-form-urlencoded", False),
        (b"payload=%7B%7D&command=%2Fsign", "application/x-www-form-urlencoded", False),
        (b"command=sign&text=x", "application/x-www-form-urlencoded", False),
        (b'{"command": "/sign"}', "application/json", False),
        (b"text=command%3D%2Fsign", "application/x-www-form-urlencoded", False),
    ],
)
def test_only_slash_commands_skip_bolt(body: bytes, content_type: str, direct: bool) -> None:
    assert (slash_command_fields(body.decode(), content_type) is not None) is direct
