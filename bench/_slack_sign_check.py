"""Checks bench/slack_sign.py's bookkeeping against servers that answer in every way it must grade.

Not a benchmark: a quick self-test of what slack_sign.py counts as a confirmation and as an error,
in-process, without cosign. Each member id's prefix picks a behaviour of a small aiohttp server
(and one real slack-bolt AsyncApp that answers inline with ack(text=, blocks=)):

    UI  inline JSON confirmation in the ack          -> confirmed at the ack, no error
    UP  inline plain-text confirmation               -> confirmed at the ack, no error
    UR  empty ack, then a confirmation at response_url -> confirmed at its arrival, no error
    UB  slack-bolt ack(response_type=, text=, blocks=) -> confirmed at the ack, no error
    UA  inline "You already signed"                  -> error (not a confirmation)
    UL  empty ack, then "You already signed" posted  -> error (not a confirmation)
    UD  inline confirmation and a response_url one   -> error (two confirmations)
    U5  HTTP 500                                     -> error
    UN  empty ack, never answered                    -> error (no confirmation in time)
    UX  empty ack, then a POST the fake refuses      -> error (refused; no confirmation)

    .venv/bin/python bench/_slack_sign_check.py     # exits 1 if any expectation fails
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
import slack_sign as bench  # noqa: E402
from _common import clear_proxies, free_port  # noqa: E402
from aiohttp import web  # noqa: E402
from fakeslack import DEFAULT_SECRET, FakeSlack  # noqa: E402
from slack_bolt.adapter.aiohttp import to_aiohttp_response  # noqa: E402
from slack_bolt.app.async_app import AsyncApp  # noqa: E402
from slack_bolt.request.async_request import AsyncBoltRequest  # noqa: E402
from slack_sdk.web.async_client import AsyncWebClient  # noqa: E402

SIGNED = f"{bench.PHRASE}Letter” as X (G). Signing closes soon; you can withdraw until then."
ALREADY = "You already signed “Letter” as X (G) on today via slack. Nothing changed."
EXPECT_OK = {"UI", "UP", "UR", "UB"}
EXPECT_ERROR = {
    "UA": "not a confirmation",
    "UL": "not a confirmation",
    "UD": "2 confirmations",
    "U5": "HTTP 500",
    "UN": "no confirmation",
    "UX": "refused",
}


async def serve(fake: FakeSlack, port: int) -> tuple[web.AppRunner, aiohttp.ClientSession]:
    http = aiohttp.ClientSession()
    client = AsyncWebClient(token=fake.token, base_url=fake.api_url)
    bolt = AsyncApp(client=client, signing_secret=DEFAULT_SECRET)

    @bolt.command("/sign")
    async def sign(ack):  # type: ignore[no-untyped-def]
        block = {"type": "section", "text": {"type": "mrkdwn", "text": SIGNED}}
        await ack(response_type="ephemeral", text=SIGNED, blocks=[block])

    async def later(url: str, payload: dict[str, object]) -> None:
        await asyncio.sleep(0.05)
        async with http.post(url, json=payload) as response:
            await response.read()

    async def endpoint(request: web.Request) -> web.StreamResponse:
        raw = await request.text()
        form = {k: v[0] for k, v in parse_qs(raw).items()}
        user, url = form["user_id"][:2], form["response_url"]
        if user == "UB":
            bolt_request = AsyncBoltRequest(
                body=raw, query=request.query_string, headers=dict(request.headers)
            )
            return await to_aiohttp_response(await bolt.async_dispatch(bolt_request))
        inline = {"response_type": "ephemeral", "text": SIGNED}
        if user in ("UI", "UD"):
            if user == "UD":
                asyncio.ensure_future(later(url, {"text": SIGNED}))
            return web.json_response(inline)
        if user == "UP":
            return web.Response(text=SIGNED)
        if user == "UA":
            return web.json_response({"response_type": "ephemeral", "text": ALREADY})
        if user == "U5":
            return web.Response(status=500, text="boom")
        if user == "UR":
            asyncio.ensure_future(later(url, {"text": SIGNED}))
        elif user == "UL":
            asyncio.ensure_future(later(url, {"text": ALREADY}))
        elif user == "UX":
            asyncio.ensure_future(later(url, {"blocks": [{"type": "nonsense"}]}))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post(bench.PATH, endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, http


async def main() -> int:
    clear_proxies()
    bench.CONFIRM_TIMEOUT = 2.0  # the never-answered request gives up after 2 s, not 30
    fake = FakeSlack()
    await fake.start()
    port = free_port()
    runner, server_http = await serve(fake, port)
    replies = bench.Replies(fake)
    users = [f"{p}{i:03d}" for p in [*EXPECT_OK, *EXPECT_ERROR] for i in range(3)]
    requests = bench.build_requests(fake, users, "check")
    replies.register(requests)
    failures = []
    try:
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            await bench.fire(http, f"http://127.0.0.1:{port}{bench.PATH}", requests, 5)
            await bench.wait_settled(replies, requests)
            await asyncio.sleep(0.5)
            replies.collect()
            waited = time.monotonic() - started
    finally:
        await server_http.close()
        await runner.cleanup()
        await fake.stop()
    for request in requests:
        kind = request.user[:2]
        problems = request.problems()
        confirmed = request.confirmed_at()
        if kind in EXPECT_OK:
            inline = kind != "UR"
            if problems or confirmed is None:
                failures.append(f"{request.user}: expected a clean confirmation, got {problems}")
            elif inline and confirmed != request.acked_at:
                failures.append(f"{request.user}: an inline confirmation should count at the ack")
            elif not inline and confirmed != request.replies[0].at:
                failures.append(f"{request.user}: should count at the response_url arrival")
        elif not any(EXPECT_ERROR[kind] in p for p in problems):
            failures.append(f"{request.user}: expected {EXPECT_ERROR[kind]!r}, got {problems}")
    side = bench.Side("check", [bench.Round("check", requests)])
    print(f"{len(requests)} requests graded in {waited:.1f} s; errors by first kind:")
    print(json.dumps(dict(side.errors()), indent=2, ensure_ascii=False))
    print(f"inline confirmations: {side.inline} (expected 12: UI, UP, UB and UD's first)")
    if side.inline != 12:
        failures.append(f"inline confirmations {side.inline}, expected 12")
    for failure in failures:
        print(f"FAIL {failure}")
    print("OK" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
