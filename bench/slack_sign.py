"""Slack `/sign` over HTTP: time until the signer is told "signed", against a bare Bolt app (§7).

What a signer waits for is the reply that says "signed", not the HTTP ack. So this bench measures,
per request, the time from sending the slash command to the moment the confirming reply reaches
"Slack" (the fake Web API in this process), and compares confirmed signatures per second with a
bare slack-bolt app in the same run.

Targets (DESIGN.md §7; exit status 1 on any miss):
- confirmed signatures/s of cosign ≥ 0.6 × the bare app's (pooled over all measured rounds of a
  side: total confirmations / total seconds from each round's first send to its last
  confirmation);
- cosign p99 time-to-confirmation < 1 s;
- cosign p99 ack < 300 ms;
- zero errors (on both sides: a misbehaving baseline invalidates the ratio), and the store agrees
  with what members were told.

Layout. Each server under test runs in its own process; the load generator and the fake Slack Web
API (tests/fakeslack.py) run in this one (on a 2-core machine: the server gets one core, the
client and the fake the other).

- cosign: `python -m bot run` with COSIGN_SLACK__ENABLED=true, COSIGN_SLACK__MODE=http,
  COSIGN_SLACK__API_URL pointing at the fake, a SQLite file in a temp dir holding a roster of
  members with Slack ids and one open letter posted to C1 (delivered by the bot's outbox before
  the run starts), console off, default logging (WARNING).
- bare: a small embedded script (BARE_APP below): a slack-bolt AsyncApp whose `/sign` listener
  acks and then POSTs a canned confirmation ("✅ You signed …", the first words of
  templates/replies/signed.j2) to the request's response_url over ONE shared aiohttp
  ClientSession (not Bolt's respond(), which opens a session per call). It is served by an aiohttp
  web server built the way SlackPlatform serves (raw body -> AsyncBoltRequest -> async_dispatch ->
  to_aiohttp_response); its Web API client points at the same fake (auth.test).

Load: rounds of `--per-round` (1000) correctly signed (v0 HMAC, as Slack signs) `/sign` requests,
each from a distinct member who signs once, a fresh set of members per round, `--concurrency` (50)
in flight (closed loop over one keep-alive session), each request with its own response_url on
the fake. Rounds alternate bare, cosign, bare, cosign… (`--rounds` in all, default 6: 3 per
side), so drift hits both; before each round the bench waits (≤ 5 s) until both servers are idle,
so one side's leftover work does not land in the other's round. Both sides are warmed up first
with `--warmup` requests from members who are not measured. This process's garbage collector is
off during a round (a full collection here takes ~100 ms and would show up as latency).

When a request counts as confirmed, and when:
- the HTTP ack itself carries the confirmation (Slack shows a slash command's 200 body as the
  reply: JSON {"response_type", "text", "blocks"} or plain text): at the moment the client has read
  the ack; or
- an empty ack is followed by a POST to the request's response_url that the fake accepts: at the
  fake's arrival stamp of that POST (FakeSlack stamps every call with time.monotonic() in this
  process, the same clock the sender uses).
A reply is a confirmation only if its text (or a block's text) contains the whole opening phrase of
templates/replies/signed.j2 ("✅ You signed “"); "You already signed" does not count.

Errors (per request): HTTP status other than 200, a connection error or timeout, no confirmation
within 30 s of the send, a reply (in the ack or at the response_url) that is not a confirmation, a
response_url POST the fake refuses, or more than one confirmation. After the last round the
bench waits 2 s more (longer than any hold-back of replies) and looks again for late or duplicate
replies. bench/_slack_sign_check.py checks this grading against servers that answer in each of
these ways (inline JSON or text, response_url, already-signed, duplicates, 500s, silence).

Measured per side: confirmed signatures/s (per round: confirmations / (the round's last
confirmation − its first send); pooled as above for the verdict, the median of rounds shown
beside it), p50/p99 time-to-confirmation (a request never confirmed counts as infinitely slow),
p50/p99 ack latency (send to response read, client side), how many confirmations came inline in
the ack, errors, the server process's CPU per request (from /proc, including cosign's worker) and
how busy this process was (near 100 % the client, not the server, would be the limit).

Afterwards: every member told "signed" has exactly one signature, active, in the database, and
no member has a signature without having been told (warm-up requests included).

    .venv/bin/python bench/slack_sign.py [--rounds 6] [--per-round 1000] [--concurrency 50]
        [--warmup 100]

It prints a line per round, a table and PASS/MISS per target, and exits 1 when any target is
missed. Everything it writes (database, logs, the bare app script) is in a temporary directory that
is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import aiohttp  # noqa: E402
from _common import (  # noqa: E402
    clear_proxies,
    free_port,
    percentile,
    process_cpu_seconds,
    table,
    verdict,
)
from fakeslack import (  # noqa: E402
    DEFAULT_SECRET,
    Call,
    FakeSlack,
    sign_request,
    slash_command_body,
)
from helpers import create_example_letter  # noqa: E402
from sqlmodel import select  # noqa: E402

from bot.config import load_settings  # noqa: E402
from bot.db import Database  # noqa: E402
from bot.models import Identity, Signature  # noqa: E402
from bot.roster import import_roster  # noqa: E402

CHANNEL = "C1"
PATH = "/slack/events"
FORM = "application/x-www-form-urlencoded"
TARGET_RATIO = 0.6
TARGET_CONFIRM_P99_MS = 1000.0
TARGET_ACK_P99_MS = 300.0
CONFIRM_TIMEOUT = 30.0  # seconds from the send: later (or never) is an error
GRACE = 2.0  # after the last round: late duplicates show up here
SIGNED_TEMPLATE = ROOT / "templates" / "replies" / "signed.j2"


def confirm_phrase() -> str:
    """The words of signed.j2 before its first placeholder: '✅ You signed “'."""
    text = SIGNED_TEMPLATE.read_text(encoding="utf-8")
    cut = min((i for i in (text.find("{{"), text.find("{%")) if i >= 0), default=len(text))
    phrase = text[:cut].strip()
    if len(phrase) < 8:
        raise SystemExit(f"{SIGNED_TEMPLATE} does not start with a recognisable phrase: {phrase!r}")
    return phrase


PHRASE = confirm_phrase()

BARE_APP = '''
"""A bare slack-bolt app: /sign acks, then posts a canned confirmation to the response_url."""
import asyncio
import logging
import os
import signal

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("bare")


async def main() -> None:
    client = AsyncWebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["API_URL"])
    app = AsyncApp(
        client=client,
        signing_secret=os.environ["SLACK_SIGNING_SECRET"],
        raise_error_for_unhandled_request=False,
    )
    http = aiohttp.ClientSession()  # ONE session for every response_url POST
    phrase = os.environ["CONFIRM_PHRASE"]

    @app.command("/sign")
    async def sign(ack, command):
        await ack()
        text = (
            f"{phrase}Open letter” as {command['user_name']} (Group). "
            "Signing closes in 3 days; you can withdraw until then."
        )
        payload = {"response_type": "ephemeral", "text": text}
        async with http.post(command["response_url"], json=payload) as response:
            body = await response.read()
            if response.status != 200:
                log.error("response_url answered %s: %s", response.status, body[:200])

    async def endpoint(request):
        raw = await request.text()
        bolt_request = AsyncBoltRequest(
            body=raw, query=request.query_string, headers=request.headers
        )
        response = await app.async_dispatch(bolt_request)
        return await to_aiohttp_response(response)

    async def healthz(request):
        return web.json_response({"ok": True})

    web_app = web.Application(client_max_size=1024 * 1024)
    web_app.router.add_post(os.environ["SLACK_PATH"], endpoint)
    web_app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(os.environ["PORT"])).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await http.close()
    if client.session is not None:
        await client.session.close()


logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
asyncio.run(main())
'''


# --------------------------------------------------------------------------- what is recorded


@dataclass
class Request:
    token: str  # the response_url token: one per request
    user: str
    body: bytes
    sent_at: float = math.nan  # time.monotonic(), the clock FakeSlack stamps calls with
    acked_at: float = math.nan  # the client has read the HTTP response
    status: int | None = None
    error: str | None = None  # a transport problem or a non-200 status
    inline: str | None = None  # the reply carried by the ack's body, if any
    replies: list[Call] = field(default_factory=list)  # response_url POSTs, in arrival order

    @property
    def settled(self) -> bool:
        """Nothing more to wait for in the round: failed, or answered one way or the other."""
        return self.error is not None or self.inline is not None or bool(self.replies)

    def confirmations(self) -> list[float]:
        """Arrival times of every reply that tells this member they signed."""
        times = []
        if self.inline is not None and is_confirmation(self.inline):
            times.append(self.acked_at)
        for call in self.replies:
            if call.status == 200 and is_confirmation(reply_text(call.args)):
                times.append(call.at)
        return times

    def confirmed_at(self) -> float | None:
        """When the first confirmation reached Slack, if within CONFIRM_TIMEOUT of the send."""
        times = self.confirmations()
        if not times or min(times) - self.sent_at > CONFIRM_TIMEOUT:
            return None
        return min(times)

    def problems(self) -> list[str]:
        """The error kinds of this request (empty: one confirmation in time, nothing else)."""
        found: list[str] = []
        if self.error is not None:
            found.append(self.error)
        if self.inline is not None and not is_confirmation(self.inline):
            found.append(f"ack carried a reply that is not a confirmation: {self.inline[:60]!r}")
        for call in self.replies:
            text = reply_text(call.args)
            if call.status != 200:
                found.append(f"response_url POST refused by Slack: {call.status} {call.response}")
            elif not is_confirmation(text):
                found.append(f"reply that is not a confirmation: {text[:60]!r}")
        times = self.confirmations()
        if len(times) > 1:
            found.append(f"{len(times)} confirmations for one request")
        if not times:
            found.append(f"no confirmation within {CONFIRM_TIMEOUT:.0f} s")
        elif min(times) - self.sent_at > CONFIRM_TIMEOUT:
            found.append(f"confirmation later than {CONFIRM_TIMEOUT:.0f} s")
        return found


@dataclass
class Round:
    side: str
    requests: list[Request]
    confirmed: int = 0
    elapsed: float = math.nan  # first send -> last confirmation
    cpu: float = 0.0  # server process CPU seconds during the round
    client_cpu: float = 0.0  # this process (load generator + fake Slack)
    wall: float = 0.0

    @property
    def rate(self) -> float:
        return self.confirmed / self.elapsed if self.elapsed > 0 else math.nan


@dataclass
class Side:
    name: str
    rounds: list[Round] = field(default_factory=list)

    @property
    def requests(self) -> list[Request]:
        return [r for rnd in self.rounds for r in rnd.requests]

    @property
    def pooled_rate(self) -> float:
        elapsed = sum(r.elapsed for r in self.rounds if not math.isnan(r.elapsed))
        return sum(r.confirmed for r in self.rounds) / elapsed if elapsed else math.nan

    @property
    def median_rate(self) -> float:
        rates = [r.rate for r in self.rounds if not math.isnan(r.rate)]
        return statistics.median(rates) if rates else math.nan

    def confirm_ms(self, q: float) -> float:
        """Percentile of send -> confirmation; a request never confirmed counts as infinite."""
        values = []
        for request in self.requests:
            at = request.confirmed_at()
            values.append(math.inf if at is None else at - request.sent_at)
        return percentile(values, q) * 1000

    def ack_ms(self, q: float) -> float:
        values = [r.acked_at - r.sent_at for r in self.requests if r.status == 200]
        return percentile(values, q) * 1000

    def errors(self) -> Counter[str]:
        kinds: Counter[str] = Counter()
        for request in self.requests:
            found = request.problems()
            if found:
                kinds[found[0]] += 1
        return kinds

    @property
    def inline(self) -> int:
        return sum(1 for r in self.requests if r.inline is not None and is_confirmation(r.inline))


def is_confirmation(text: str) -> bool:
    return PHRASE in text


def reply_text(args: dict[str, Any]) -> str:
    """The message's text and its blocks' texts, one per line."""
    parts = [str(args.get("text") or "")]
    blocks = args.get("blocks")
    for block in blocks if isinstance(blocks, list) else []:
        if isinstance(block, dict):
            inner = block.get("text")
            parts.append(
                str(inner.get("text", "")) if isinstance(inner, dict) else str(inner or "")
            )
    return "\n".join(p for p in parts if p)


def inline_reply(raw: bytes, content_type: str) -> str | None:
    """The reply a slash command's 200 body gives the user, or None for an empty ack.

    Slack shows a JSON body's text/blocks as a message, and a non-JSON body as plain text.
    """
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    if content_type == "application/json" or text.startswith("{"):
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(payload, dict):
            if not payload.get("text") and not payload.get("blocks"):
                return None  # "{}": nothing is shown
            return reply_text(payload)
    return text


class Replies:
    """Files the fake's response_url calls under the requests they answer."""

    def __init__(self, fake: FakeSlack) -> None:
        self.fake = fake
        self.index = 0
        self.by_token: dict[str, Request] = {}
        self.strays: list[Call] = []

    def register(self, requests: list[Request]) -> None:
        self.by_token.update((r.token, r) for r in requests)

    def collect(self) -> None:
        calls = self.fake.calls
        end = len(calls)
        for i in range(self.index, end):
            call = calls[i]
            if call.method != "response_url":
                continue
            request = self.by_token.get(call.path.rsplit("/", 1)[-1])
            if request is None:
                self.strays.append(call)
            else:
                request.replies.append(call)
        self.index = end


@dataclass
class Server:
    name: str
    process: asyncio.subprocess.Process
    url: str
    health: str
    log: Path


# --------------------------------------------------------------------------- processes


def child_env(**extra: str) -> dict[str, str]:
    """A clean environment: no proxies, this checkout's code first on the path."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    env.update(extra)
    return env


async def spawn(name: str, args: list[str], env: dict[str, str], cwd: Path, port: int) -> Server:
    log = cwd / f"{name}.log"
    with log.open("ab") as handle:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=str(cwd),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
        )
    base = f"http://127.0.0.1:{port}"
    return Server(name, process, base + PATH, base + "/healthz", log)


async def wait_healthy(http: aiohttp.ClientSession, server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.returncode is not None:
            break
        try:
            async with http.get(server.health) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    tail = server.log.read_text(errors="replace")[-3000:]
    raise SystemExit(f"{server.name} did not come up; its log ends with:\n{tail}")


async def wait_idle(servers: list[Server], limit: float = 5.0) -> None:
    """Until the servers together use < 10 % of a core over 0.2 s (at most `limit` seconds)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = sum(process_cpu_seconds(s.process.pid) for s in servers)
        await asyncio.sleep(0.2)
        used = sum(process_cpu_seconds(s.process.pid) for s in servers) - before
        if not used >= 0.02:  # NaN (no /proc) counts as idle
            return


async def stop(server: Server) -> int | None:
    if server.process.returncode is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(server.process.wait(), timeout=20)
        except TimeoutError:
            server.process.kill()
            await server.process.wait()
    return server.process.returncode


def log_problems(server: Server) -> list[str]:
    lines = server.log.read_text(errors="replace").splitlines()
    return [line for line in lines if " ERROR " in line or line.startswith("Traceback")]


# --------------------------------------------------------------------------- load


def build_requests(fake: FakeSlack, users: list[str], tag: str) -> list[Request]:
    requests = []
    for i, user in enumerate(users):
        token = f"{tag}-{i}-{user}"
        body = slash_command_body(
            "/sign",
            "",
            user,
            user_name=user.lower(),
            channel_id=CHANNEL,
            response_url=fake.response_url(token),
        )
        requests.append(Request(token, user, body))
    return requests


async def fire(
    http: aiohttp.ClientSession, url: str, requests: list[Request], concurrency: int
) -> None:
    """Closed loop: `concurrency` workers, each sends its next request when the last is acked."""
    queue = iter(requests)

    async def worker() -> None:
        for request in queue:
            headers = {"Content-Type": FORM, **sign_request(DEFAULT_SECRET, request.body)}
            request.sent_at = time.monotonic()
            try:
                async with http.post(url, data=request.body, headers=headers) as response:
                    raw = await response.read()
                    request.acked_at = time.monotonic()
                    request.status = response.status
                    content_type = response.content_type
            except (aiohttp.ClientError, TimeoutError) as exc:
                request.acked_at = time.monotonic()
                request.error = f"connection error: {type(exc).__name__}"
                continue
            if request.status != 200:
                request.error = f"HTTP {request.status}"
                continue
            request.inline = inline_reply(raw, content_type)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def wait_settled(replies: Replies, requests: list[Request]) -> None:
    """Until every request failed or got its answer, or CONFIRM_TIMEOUT after the last send."""
    deadline = max(r.sent_at for r in requests) + CONFIRM_TIMEOUT
    pending = requests
    while True:
        replies.collect()
        pending = [r for r in pending if not r.settled]
        if not pending or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.01)


async def run_round(
    http: aiohttp.ClientSession,
    replies: Replies,
    server: Server,
    rnd: Round,
    concurrency: int,
) -> Round:
    # The load generator's own garbage collector must not pause a round (a full collection of this
    # process's heap takes ~100 ms): collect before, none during.
    replies.register(rnd.requests)
    gc.collect()
    gc.disable()
    try:
        cpu_before = process_cpu_seconds(server.process.pid)
        client_before = time.process_time()
        started = time.monotonic()
        await fire(http, server.url, rnd.requests, concurrency)
        await wait_settled(replies, rnd.requests)
        rnd.cpu = process_cpu_seconds(server.process.pid) - cpu_before
        rnd.client_cpu = time.process_time() - client_before
        rnd.wall = time.monotonic() - started
    finally:
        gc.enable()
    times = [t for t in (r.confirmed_at() for r in rnd.requests) if t is not None]
    rnd.confirmed = len(times)
    if times:
        rnd.elapsed = max(times) - min(r.sent_at for r in rnd.requests)
    return rnd


def describe(rnd: Round, label: str) -> str:
    side = Side(rnd.side, [rnd])
    errors = sum(side.errors().values())
    return (
        f"  {label:>8} {rnd.side:6}: {rnd.confirmed}/{len(rnd.requests)} confirmed in "
        f"{rnd.elapsed:.2f} s = {rnd.rate:.0f}/s; confirmation p50 {side.confirm_ms(50):.0f} ms "
        f"p99 {side.confirm_ms(99):.0f} ms; ack p99 {side.ack_ms(99):.0f} ms; "
        f"inline {side.inline}; errors {errors}; client busy "
        f"{100 * rnd.client_cpu / rnd.wall if rnd.wall else math.nan:.0f} %"
    )


# --------------------------------------------------------------------------- setup and checks


def roster(users: list[str]) -> str:
    header = "member_id,title,given_name,family_name,post_nominals,group,slack_id,role\n"
    rows = [
        f"m{i:05d},Senator,Given{i:05d},Family{i:05d},MP,Group {i % 40:02d},{user},member"
        for i, user in enumerate(users)
    ]
    return header + "\n".join(rows) + "\n"


def prepare_database(db_url: str, work: Path, users: list[str]) -> None:
    settings = load_settings(
        None, {"database": {"url": db_url}, "letters": {"output_dir": str(work / "out")}}
    )
    database = Database(db_url)
    try:
        database.upgrade()
        with database.session() as session:
            import_roster(session, data=roster(users), actor="bench")
        create_example_letter(database, settings, post_to=[f"slack:{CHANNEL}"])
    finally:
        database.dispose()


def check_store(db_url: str, requests: list[Request]) -> list[str]:
    """Whoever was told "signed" has exactly one active signature; nobody else has one."""
    database = Database(db_url)
    try:
        with database.session() as session:
            slack_of = {
                i.member_pk: i.external_id
                for i in session.exec(select(Identity).where(Identity.platform == "slack")).all()
            }
            rows = session.exec(select(Signature)).all()
    finally:
        database.dispose()
    per_user = Counter(slack_of.get(r.member_pk, "?") for r in rows)
    active = Counter(slack_of.get(r.member_pk, "?") for r in rows if r.withdrawn_at is None)
    told = {r.user for r in requests if r.confirmations()}
    problems = []
    for user in sorted(told):
        if per_user[user] != 1 or active[user] != 1:
            problems.append(
                f"{user} was told 'signed': {per_user[user]} signature rows, {active[user]} active"
            )
    for user in sorted(set(per_user) - told):
        problems.append(f"{user} has {per_user[user]} signature row(s) but was never told 'signed'")
    return problems


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, work: Path) -> int:
    order = ["bare" if i % 2 == 0 else "cosign" for i in range(args.rounds)]
    cosign_rounds = order.count("cosign")
    warm_users = [f"UW{i:05d}" for i in range(args.warmup)]
    cosign_users = [f"UC{i:06d}" for i in range(cosign_rounds * args.per_round)]
    db_url = f"sqlite:///{work / 'cosign.db'}"
    prepare_database(db_url, work, warm_users + cosign_users)
    (work / "bare_bolt.py").write_text(BARE_APP)

    fake = FakeSlack()
    await fake.start()
    replies = Replies(fake)
    bare_port, cosign_port = free_port(), free_port()
    secrets = {"SLACK_BOT_TOKEN": fake.token, "SLACK_SIGNING_SECRET": DEFAULT_SECRET}
    sides = {"bare": Side("bare"), "cosign": Side("cosign")}
    warmups: list[Round] = []
    servers: list[Server] = []
    try:
        bare = await spawn(
            "bare",
            [str(work / "bare_bolt.py")],
            child_env(
                API_URL=fake.api_url,
                PORT=str(bare_port),
                SLACK_PATH=PATH,
                CONFIRM_PHRASE=PHRASE,
                **secrets,
            ),
            work,
            bare_port,
        )
        servers.append(bare)
        cosign = await spawn(
            "cosign",
            ["-m", "bot", "run"],
            child_env(
                COSIGN_CONSOLE__ENABLED="false",
                COSIGN_DATABASE__URL=db_url,
                COSIGN_LETTERS__OUTPUT_DIR=str(work / "out"),
                COSIGN_SLACK__ENABLED="true",
                COSIGN_SLACK__MODE="http",
                COSIGN_SLACK__HOST="127.0.0.1",
                COSIGN_SLACK__PORT=str(cosign_port),
                COSIGN_SLACK__PATH=PATH,
                COSIGN_SLACK__API_URL=fake.api_url,
                **secrets,
            ),
            work,
            cosign_port,
        )
        servers.append(cosign)
        by_name = {"bare": bare, "cosign": cosign}
        timeout = aiohttp.ClientTimeout(total=CONFIRM_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            await wait_healthy(http, bare)
            await wait_healthy(http, cosign)
            await fake.wait_for("chat.postMessage", timeout=30)  # the letter is in C1
            gc.collect()
            gc.freeze()  # what exists now (modules, roster) is never scanned again
            print(
                f"servers up; {len(warm_users) + len(cosign_users)} members, letter posted in "
                f"{CHANNEL}; confirmation phrase {PHRASE!r}; warming up ({args.warmup} requests "
                "each)",
                flush=True,
            )
            bare_warm = [f"UBW{i:05d}" for i in range(args.warmup)]
            for name, users in (("bare", bare_warm), ("cosign", warm_users)):
                rnd = Round(name, build_requests(fake, users, f"{name}-warm"))
                await wait_idle(servers)
                warmups.append(await run_round(http, replies, by_name[name], rnd, args.concurrency))
                print(describe(rnd, "warm-up"), flush=True)
            next_cosign = 0
            for i, name in enumerate(order):
                if name == "cosign":
                    users = cosign_users[next_cosign : next_cosign + args.per_round]
                    next_cosign += args.per_round
                else:
                    users = [f"UB{i:02d}{j:05d}" for j in range(args.per_round)]
                rnd = Round(name, build_requests(fake, users, f"{name}-r{i}"))
                await wait_idle(servers)
                sides[name].rounds.append(
                    await run_round(http, replies, by_name[name], rnd, args.concurrency)
                )
                print(describe(rnd, f"round {i + 1}"), flush=True)
            await asyncio.sleep(GRACE)  # late or duplicate replies show up here
            replies.collect()
    finally:
        codes = {s.name: await stop(s) for s in servers}
        await fake.stop()

    # ---------------------------------------------------------------- report
    rows = []
    for side in sides.values():
        requests = side.requests
        cpu = sum(r.cpu for r in side.rounds)
        client_cpu = sum(r.client_cpu for r in side.rounds)
        client_wall = sum(r.wall for r in side.rounds)
        rows.append(
            [
                "bare bolt (ack + canned reply)" if side.name == "bare" else "cosign run",
                len(side.rounds),
                len(requests),
                sum(r.confirmed for r in side.rounds),
                side.pooled_rate,
                side.median_rate,
                side.confirm_ms(50),
                side.confirm_ms(99),
                side.ack_ms(50),
                side.ack_ms(99),
                side.inline,
                sum(side.errors().values()),
                cpu / len(requests) * 1000 if requests else math.nan,
                100 * client_cpu / client_wall if client_wall else math.nan,
            ]
        )
    print()
    print(
        f"{args.concurrency} in flight, rounds of {args.per_round} distinct members, "
        f"{args.rounds} rounds alternating bare/cosign"
    )
    print(
        table(
            [
                "side",
                "rounds",
                "requests",
                "confirmed",
                "conf/s",
                "median round conf/s",
                "conf p50 ms",
                "conf p99 ms",
                "ack p50 ms",
                "ack p99 ms",
                "inline",
                "errors",
                "cpu ms/req",
                "client cpu %",
            ],
            rows,
        )
    )
    print(
        "\n".join(
            [
                "conf/s: confirmations / seconds from a round's first send to its last "
                "confirmation, pooled over the side's rounds (the verdict's figure).",
                "conf p50/p99: send → the confirming reply reaches Slack (inline in the ack: when "
                "the ack was read; else the response_url POST's arrival at the fake).",
                "ack p50/p99: send → HTTP response read, client side. inline: confirmations "
                "carried by the ack itself.",
                "cpu ms/req: the server process's CPU time (with its children) per request.",
                "client cpu %: this process (load generator + fake Slack) during the rounds; near "
                "100 it, not the server, limits the rate.",
            ]
        )
    )

    bare_side, cosign_side = sides["bare"], sides["cosign"]
    everything = [r for rnd in warmups for r in rnd.requests]
    everything += bare_side.requests + cosign_side.requests
    problems = [
        f"{rnd.side} warm-up: {kind} ×{n}"
        for rnd in warmups
        for kind, n in Side(rnd.side, [rnd]).errors().items()
    ]
    cosign_requests = [r for r in everything if r.token.startswith("cosign-")]
    problems += check_store(db_url, cosign_requests)
    problems += [f"a response_url POST nobody asked for: {c.path}" for c in replies.strays[:5]]
    for server in servers:
        problems += [f"{server.name} log: {line}" for line in log_problems(server)[:5]]
        if codes[server.name] not in (0, None):
            problems.append(f"{server.name} exited with {codes[server.name]}")

    ratio = cosign_side.pooled_rate / bare_side.pooled_rate if bare_side.pooled_rate else math.nan
    median_ratio = (
        cosign_side.median_rate / bare_side.median_rate if bare_side.median_rate else math.nan
    )
    errors = {name: side.errors() for name, side in sides.items()}
    print()
    print(
        f"confirmed/s cosign/bare: {ratio:.2f} pooled (the verdict), {median_ratio:.2f} as a "
        f"ratio of round medians; per round: bare "
        + ", ".join(f"{r.rate:.0f}" for r in bare_side.rounds)
        + "; cosign "
        + ", ".join(f"{r.rate:.0f}" for r in cosign_side.rounds)
    )
    for name, kinds in errors.items():
        print(f"errors, {name}: {sum(kinds.values())}" + (f" {dict(kinds)}" if kinds else ""))
    print(
        "store agrees with the replies (told 'signed' ⇔ exactly one active signature), logs "
        f"clean: {'yes' if not problems else f'NO, {len(problems)} problem(s)'}"
    )
    for problem in problems[:20]:
        print(f"  - {problem}")
    cosign_p99 = cosign_side.confirm_ms(99)
    ack_p99 = cosign_side.ack_ms(99)
    total_errors = sum(sum(k.values()) for k in errors.values())
    checks = [
        (f"confirmed/s ≥ {TARGET_RATIO} × bare ({ratio:.2f})", ratio >= TARGET_RATIO),
        (
            f"cosign p99 time-to-confirmation < {TARGET_CONFIRM_P99_MS:.0f} ms "
            f"({cosign_p99:.0f} ms)",
            cosign_p99 < TARGET_CONFIRM_P99_MS,
        ),
        (
            f"cosign p99 ack < {TARGET_ACK_P99_MS:.0f} ms ({ack_p99:.0f} ms)",
            ack_p99 < TARGET_ACK_P99_MS,
        ),
        (
            f"zero errors, store consistent ({total_errors} errors, {len(problems)} problems)",
            total_errors == 0 and not problems,
        ),
    ]
    print()
    for label, ok in checks:
        print(f"{verdict(ok)}  {label}")
    return 0 if all(ok for _, ok in checks) else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="measured rounds in all, alternating bare/cosign (default 6: 3 per side)",
    )
    parser.add_argument(
        "--per-round",
        type=int,
        default=1000,
        help="requests per round, each from a distinct member (default 1000)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, help="requests in flight (default 50)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=100,
        help="warm-up requests per side, from members not measured (default 100)",
    )
    args = parser.parse_args()
    if args.rounds < 2 or min(args.per_round, args.concurrency, args.warmup) < 1:
        parser.error("--rounds must be ≥ 2; --per-round, --concurrency and --warmup ≥ 1")
    clear_proxies()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="cosign-bench-slack-") as tmp:
        sys.exit(asyncio.run(run(args, Path(tmp))))


if __name__ == "__main__":
    main()
