"""Slack `/sign` over HTTP, 50 signed requests in flight, against a bare Bolt app (DESIGN.md §7).

Target: cosign's ack throughput ≥ 0.6 × a bare slack-bolt AsyncApp that only acks, same machine,
same load; p99 ack < 300 ms; zero errors.

Layout (the same for both sides). Each server under test runs in its own process, the load
generator and the fake Slack Web API (tests/fakeslack.py) in this one. On a 2-core machine that
gives the server one core and the client the other, instead of the client stealing the server's
event loop and GIL, and it is how cosign really runs:

- cosign: `python -m bot run` with COSIGN_SLACK__ENABLED=true, COSIGN_SLACK__MODE=http,
  COSIGN_SLACK__API_URL pointing at the fake, a SQLite file in a temp dir holding a roster of
  members with Slack ids and one open letter posted to C1 (delivered by the bot's outbox before
  the run starts), console off, default logging (WARNING).
- bare: a small embedded script (BARE_APP below): slack-bolt AsyncApp with one
  `@app.command("/sign")` that only acks, behind an aiohttp web server built exactly the way
  SlackPlatform._start_http/_http_endpoint build theirs (raw body -> AsyncBoltRequest ->
  async_dispatch -> to_aiohttp_response), its client pointed at the same fake for auth.test.

Load: `--concurrency` (50) aiohttp workers sharing one keep-alive session, each request a
correctly signed (v0 HMAC) `/sign` form body with its own response_url on the fake. Rounds of
`--per-round` requests alternate bare, cosign, bare, cosign…, so drift hits both. In the
measured "new" rounds every request comes from a distinct roster member who signs once; in the
"repeat" rounds members who already signed sign again (the 'already signed' path). Both sides
are warmed up first (cosign with members kept out of the measured set). After each cosign round
the bench waits until every user's reply reached its response_url and records when.

Measured per side: throughput (acked requests / wall time from first send to last ack), p50 and
p99 ack latency (client-side, send to response read), errors (non-200 or connection failures),
the server process's CPU time per request (from /proc, including cosign's post-ack work), how busy
this process was (if it were near 100 % the client, not the server, would be the limit), and for
cosign the rate at which users actually got their answers (requests / time until the round's last
reply) and each reply's latency. This process's garbage collector is off during a round (a full
collection here takes ~100 ms and showed up as p99). Afterwards it checks that every acked
signature is stored exactly once and every user got exactly one reply with the expected text.

    .venv/bin/python bench/slack_sign.py [--rounds 8] [--per-round 250] [--concurrency 50]
        [--repeat-rounds 2] [--warmup 100]

Rounds of 250 with 50 in flight measure sustained load (cosign's post-ack work piles up behind
its acks, as it would under a real burst of sign-ups); `--per-round 50 --rounds 20
--repeat-rounds 10` measures isolated bursts of 50 instead.

It prints a table, the ratio and PASS/MISS per target, and exits 1 when any target is missed.
Everything it writes (database, logs, the bare app script) is in a temporary directory that is
removed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import signal
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
from fakeslack import DEFAULT_SECRET, FakeSlack, sign_request, slash_command_body  # noqa: E402
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
TARGET_P99_MS = 300.0

BARE_APP = '''
"""A bare slack-bolt app that only acks /sign, served like SlackPlatform serves."""
import asyncio
import gc
import logging
import os
import signal

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient


async def main() -> None:
    client = AsyncWebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["API_URL"])
    app = AsyncApp(
        client=client,
        signing_secret=os.environ["SLACK_SIGNING_SECRET"],
        raise_error_for_unhandled_request=False,
    )

    @app.command("/sign")
    async def sign(ack):
        await ack()

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
    if client.session is not None:
        await client.session.close()


logging.basicConfig(level=logging.WARNING)
asyncio.run(main())
'''


@dataclass
class Request:
    token: str  # the response_url token: one per request
    user: str
    body: bytes
    sent_at: float = math.nan  # time.monotonic(), the clock FakeSlack stamps calls with


@dataclass
class Stats:
    """Pooled over all rounds of one kind."""

    latencies: list[float] = field(default_factory=list)  # seconds, acked requests only
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0  # sum over rounds: first send to last ack
    cpu: float = 0.0  # server process CPU seconds over the rounds
    client_cpu: float = 0.0  # this process (load generator + fake Slack) over the rounds
    client_wall: float = 0.0
    requests: int = 0
    reply_latencies: list[float] = field(default_factory=list)  # send -> reply at response_url
    done_elapsed: float = 0.0  # sum over rounds: first send to last reply (cosign only)

    @property
    def acked(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.acked / self.elapsed if self.elapsed else math.nan

    @property
    def done_rate(self) -> float:
        """Requests answered at their response_url per second (the work behind the acks)."""
        return self.requests / self.done_elapsed if self.done_elapsed else math.nan

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


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
) -> tuple[list[float], list[str], float]:
    """Closed loop: `concurrency` workers, each sends its next request when the last is acked."""
    latencies: list[float] = []
    errors: list[str] = []
    queue = iter(requests)

    async def worker() -> None:
        for request in queue:
            headers = {"Content-Type": FORM, **sign_request(DEFAULT_SECRET, request.body)}
            request.sent_at = time.monotonic()
            started = time.perf_counter()
            try:
                async with http.post(url, data=request.body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(exc.__class__.__name__)
                continue
            elapsed = time.perf_counter() - started
            if status == 200:
                latencies.append(elapsed)
            else:
                errors.append(f"HTTP {status}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


async def wait_replies(
    fake: FakeSlack, requests: list[Request], timeout: float
) -> dict[str, list[Any]]:
    """Reply calls per token once every request has one (or at the timeout)."""
    wanted = {r.token for r in requests}
    seen: dict[str, list[Any]] = {}
    index = 0
    deadline = time.monotonic() + timeout
    while True:
        calls = fake.calls
        for call in calls[index:]:
            if call.method == "response_url":
                token = call.path.rsplit("/", 1)[-1]
                if token in wanted:
                    seen.setdefault(token, []).append(call)
        index = len(calls)
        if len(seen) == len(wanted) or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.01)


def reply_text(args: dict[str, Any]) -> str:
    parts = [str(args.get("text", ""))]
    blocks = args.get("blocks")
    for block in blocks if isinstance(blocks, list) else []:
        parts.append(str((block.get("text") or {}).get("text", "")))
    return "\n".join(parts)


async def run_round(
    http: aiohttp.ClientSession,
    fake: FakeSlack,
    server: Server,
    requests: list[Request],
    stats: Stats,
    *,
    concurrency: int,
    replies: dict[str, list[Any]] | None,
    reply_timeout: float,
) -> tuple[float, float]:
    """One round; returns (acks/s, seconds from first send to the last reply or NaN)."""
    # The load generator's own garbage collector must not pause a round (a full collection of this
    # process's heap takes ~100 ms): collect before, none during.
    gc.collect()
    gc.disable()
    done = math.nan
    try:
        cpu_before = process_cpu_seconds(server.process.pid)
        client_before = time.process_time()
        round_start = time.monotonic()
        latencies, errors, elapsed = await fire(http, server.url, requests, concurrency)
        if replies is not None:
            got = await wait_replies(fake, requests, reply_timeout)
            replies.update(got)
            firsts = {token: calls[0].at for token, calls in got.items()}
            for request in requests:
                if request.token in firsts:
                    stats.reply_latencies.append(firsts[request.token] - request.sent_at)
            last = max(firsts.values()) if firsts else time.monotonic()
            done = last - round_start
            stats.done_elapsed += done
        stats.cpu += process_cpu_seconds(server.process.pid) - cpu_before
        stats.client_cpu += time.process_time() - client_before
        stats.client_wall += time.monotonic() - round_start
    finally:
        gc.enable()
    stats.latencies += latencies
    stats.errors += errors
    stats.elapsed += elapsed
    stats.requests += len(requests)
    return len(latencies) / elapsed, done


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


def check_store(db_url: str, signers: list[str]) -> list[str]:
    """Every member who signed has exactly one signature row, and it is active."""
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
    problems = []
    for user in signers:
        if per_user[user] != 1 or active[user] != 1:
            problems.append(f"{user}: {per_user[user]} signature rows, {active[user]} active")
    strays = set(per_user) - set(signers)
    if strays:
        problems.append(f"signatures from members who were not measured: {sorted(strays)[:5]}")
    return problems


def check_replies(replies: dict[str, list[Any]], requests: list[Request], phrase: str) -> list[str]:
    problems = []
    for request in requests:
        calls = replies.get(request.token, [])
        if len(calls) != 1:
            problems.append(f"{request.user} ({request.token}): {len(calls)} replies")
        elif phrase not in reply_text(calls[0].args):
            problems.append(f"{request.user}: unexpected reply {reply_text(calls[0].args)[:120]!r}")
    return problems


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, work: Path) -> int:
    measured = args.rounds * args.per_round
    users = [f"UW{i:05d}" for i in range(args.warmup)] + [f"UM{i:05d}" for i in range(measured)]
    warm_users, fresh_users = users[: args.warmup], users[args.warmup :]
    db_url = f"sqlite:///{work / 'cosign.db'}"
    prepare_database(db_url, work, users)
    (work / "bare_bolt.py").write_text(BARE_APP)

    fake = FakeSlack()
    await fake.start()
    bare_port, cosign_port = free_port(), free_port()
    secrets = {"SLACK_BOT_TOKEN": fake.token, "SLACK_SIGNING_SECRET": DEFAULT_SECRET}
    bare_stats, new_stats, repeat_stats = Stats(), Stats(), Stats()
    replies: dict[str, list[Any]] = {}
    new_requests: list[Request] = []
    repeat_requests: list[Request] = []
    servers: list[Server] = []
    try:
        bare = await spawn(
            "bare",
            [str(work / "bare_bolt.py")],
            child_env(API_URL=fake.api_url, PORT=str(bare_port), SLACK_PATH=PATH, **secrets),
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
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            await wait_healthy(http, bare)
            await wait_healthy(http, cosign)
            await fake.wait_for("chat.postMessage", timeout=30)  # the letter is in C1
            gc.collect()
            gc.freeze()  # what exists now (modules, roster) is never scanned again
            print(
                f"servers up; {len(users)} members, letter posted in {CHANNEL}; warming up "
                f"({args.warmup} requests each)",
                flush=True,
            )
            common: dict[str, Any] = {
                "concurrency": args.concurrency,
                "reply_timeout": args.reply_timeout,
            }
            warm = build_requests(fake, warm_users, "warm")
            await run_round(
                http,
                fake,
                bare,
                build_requests(fake, warm_users, "bw"),
                Stats(),
                replies=None,
                **common,
            )
            await run_round(http, fake, cosign, warm, Stats(), replies={}, **common)

            rounds: list[tuple[str, list[str]]] = []
            for r in range(args.rounds):
                chunk = fresh_users[r * args.per_round : (r + 1) * args.per_round]
                rounds.append((f"new{r}", chunk))
            for r in range(args.repeat_rounds):
                start = (r * args.per_round) % max(1, len(fresh_users))
                chunk = (fresh_users * 2)[start : start + args.per_round]
                rounds.append((f"rep{r}", chunk))
            for tag, chunk in rounds:
                bare_rate, _ = await run_round(
                    http,
                    fake,
                    bare,
                    build_requests(fake, chunk, "b" + tag),
                    bare_stats,
                    replies=None,
                    **common,
                )
                requests = build_requests(fake, chunk, "c" + tag)
                is_new = tag.startswith("new")
                (new_requests if is_new else repeat_requests).extend(requests)
                cosign_rate, done = await run_round(
                    http,
                    fake,
                    cosign,
                    requests,
                    new_stats if is_new else repeat_stats,
                    replies=replies,
                    **common,
                )
                print(
                    f"  round {tag}: bare {bare_rate:.0f} acks/s, cosign {cosign_rate:.0f} acks/s "
                    f"(ratio {cosign_rate / max(bare_rate, 1e-9):.2f}), all {len(chunk)} answered "
                    f"after "
                    f"{done:.1f} s",
                    flush=True,
                )
            await asyncio.sleep(0.5)  # a late duplicate reply would show up here
            extra = await wait_replies(fake, new_requests + repeat_requests, 0)
            replies = extra
    finally:
        codes = {s.name: await stop(s) for s in servers}
        await fake.stop()

    # ---------------------------------------------------------------- report
    rows = []
    for name, stats in (
        ("bare bolt (ack only)", bare_stats),
        ("cosign /sign, new", new_stats),
        ("cosign /sign, already", repeat_stats),
    ):
        if not stats.requests:
            continue
        rows.append(
            [
                name,
                stats.requests,
                stats.throughput,
                stats.ms(50),
                stats.ms(99),
                max(stats.latencies) * 1000 if stats.latencies else math.nan,
                len(stats.errors),
                stats.cpu / stats.requests * 1000,
                100 * stats.client_cpu / stats.client_wall if stats.client_wall else math.nan,
                stats.done_rate,
                percentile(stats.reply_latencies, 50) * 1000,
                percentile(stats.reply_latencies, 99) * 1000,
            ]
        )
    print()
    print(
        f"{args.concurrency} in flight, rounds of {args.per_round}, "
        f"{args.rounds} new + {args.repeat_rounds} repeat rounds, alternating bare/cosign"
    )
    print(
        table(
            [
                "side",
                "requests",
                "acks/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "errors",
                "cpu ms/req",
                "client cpu %",
                "answered/s",
                "reply p50 ms",
                "reply p99 ms",
            ],
            rows,
        )
    )
    print(
        "\n".join(
            [
                "acks/s: acked requests / wall time from a round's first send to its last ack "
                "(summed over rounds).",
                "p50/p99/max: ack latency, send → HTTP response read, client side.",
                "cpu ms/req: the server process's CPU time per request, cosign's including its "
                "post-ack work.",
                "client cpu %: this process (load generator + fake Slack) busy during the "
                "rounds; near 100 it, not the server, limits the rate.",
                "answered/s: requests / wall time from a round's first send to its last reply "
                "at a response_url.",
                "reply p50/p99: send → that request's reply at its response_url.",
            ]
        )
    )

    problems = check_store(db_url, warm_users + fresh_users)
    problems += check_replies(replies, new_requests, "You signed")
    problems += check_replies(replies, repeat_requests, "already signed")
    for server in (bare, cosign):
        problems += [f"{server.name} log: {line}" for line in log_problems(server)[:5]]
        if codes[server.name] not in (0, None):
            problems.append(f"{server.name} exited with {codes[server.name]}")
    errors = Counter(bare_stats.errors + new_stats.errors + repeat_stats.errors)

    sides = [("new signatures", new_stats)]
    if repeat_stats.requests:
        sides.append(("already signed", repeat_stats))
    total_errors = len(new_stats.errors) + len(repeat_stats.errors)
    print()
    checks: list[tuple[str, bool]] = []
    for label, stats in sides:
        ratio = stats.throughput / max(bare_stats.throughput, 1e-9)
        answered = stats.done_rate / max(bare_stats.throughput, 1e-9)
        print(
            f"{label:15}  ack throughput cosign/bare {ratio:.2f} (target ≥ {TARGET_RATIO}); "
            f"answered/s vs bare acks/s {answered:.2f} (for information)"
        )
        checks.append(
            (
                f"{label}: ack throughput ≥ {TARGET_RATIO} × bare ({ratio:.2f})",
                ratio >= TARGET_RATIO,
            )
        )
        checks.append(
            (
                f"{label}: p99 ack < {TARGET_P99_MS:.0f} ms ({stats.ms(99):.0f} ms)",
                stats.ms(99) < TARGET_P99_MS,
            )
        )
    print(
        f"errors: cosign {total_errors}, bare {len(bare_stats.errors)}"
        + (f" {dict(errors)}" if errors else "")
    )
    print(
        "every acked signature stored exactly once, every user exactly one reply: "
        f"{'yes' if not problems else f'NO, {len(problems)} problem(s)'}"
    )
    for problem in problems[:20]:
        print(f"  - {problem}")
    checks.append(("zero errors, nothing lost or doubled", total_errors == 0 and not problems))
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
        default=8,
        help="measured rounds of new signatures per side (default 8)",
    )
    parser.add_argument(
        "--per-round",
        type=int,
        default=250,
        help="requests per round (default 250; 50 measures single bursts of 50)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=50, help="requests in flight (default 50)"
    )
    parser.add_argument(
        "--repeat-rounds",
        type=int,
        default=2,
        help="extra rounds where members who signed sign again (default 2; 0: off)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=100,
        help="warm-up requests per side, from members not measured (default 100)",
    )
    parser.add_argument(
        "--reply-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for a round's replies (default 60)",
    )
    args = parser.parse_args()
    if min(args.rounds, args.per_round, args.concurrency) < 1 or args.warmup < 1:
        parser.error("--rounds, --per-round, --concurrency and --warmup must be ≥ 1")
    clear_proxies()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="cosign-bench-slack-") as tmp:
        sys.exit(asyncio.run(run(args, Path(tmp))))


if __name__ == "__main__":
    main()
