"""Where a signature's CPU goes in the command worker: a profiling aid, not a bench (no target).

N journaled Slack `/sign` commands from distinct members, dispatched in-process on a fresh SQLite
file one per transaction (`Dispatcher.dispatch`, `--batch 1`) or in batches
(`Dispatcher.dispatch_many`, as the worker runs a burst). The first half warms up; the second is
measured (wall and CPU ms per signature) and, with `--profile`, profiled with cProfile.

    .venv/bin/python bench/profile_sign.py [--members 2000] [--batch 32] [--no-slug] [--profile]

`--no-slug`: `/sign` without a slug, the letter found by its channel (as bench/slack_sign.py
sends it).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import LETTER  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from sqlmodel import select  # noqa: E402

from bot.config import load_settings  # noqa: E402
from bot.core import Dispatcher, Invocation, Reply  # noqa: E402
from bot.db import Database  # noqa: E402
from bot.letterfile import parse_letter  # noqa: E402
from bot.models import Identity, Member, Role  # noqa: E402
from bot.models._types import utcnow  # noqa: E402
from bot.store import letters  # noqa: E402
from handlers import REGISTRY  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--no-slug", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    url = f"sqlite:///{tempfile.mkdtemp()}/cosign.db"
    settings = load_settings(None, {"database": {"url": url}})
    database = Database(url)
    database.upgrade()
    now = utcnow()
    source = parse_letter(LETTER.read_text(encoding="utf-8"), zone=settings.letters.zone, now=now)
    with database.session() as session:
        letter = letters.create_letter(
            session, source=source, deadline=now + timedelta(days=3), actor="bench"
        )
        assert letter is not None and letter.id is not None
        letter.state = "open"
        session.add(letter)
        session.flush()
        letters.upsert_post(session, letter_pk=letter.id, platform="slack", channel="C1")
        rows = [
            {"member_id": f"m{i}", "given_name": "A", "family_name": f"B{i}", "group": "G",
             "role": Role.member.value, "active": True}
            for i in range(args.members)
        ]  # fmt: skip
        session.execute(insert(Member), rows)
        pks = [pk for pk in session.exec(select(Member.id)).all() if pk is not None]
        session.execute(
            insert(Identity),
            [
                {"platform": "slack", "external_id": f"U{pk}", "member_pk": pk,
                 "linked_by": "roster"}
                for pk in pks
            ],
        )  # fmt: skip
    dispatcher = Dispatcher(settings, database, REGISTRY)
    invocations = [
        Invocation(
            "slack",
            "C1",
            f"U{pk}",
            "sign",
            [] if args.no_slug else [source.slug],
            event_id=f"cmd-{pk}",
            reply_to={"response_url": f"http://x/{pk}", "user": f"U{pk}", "inline": True},
        )
        for pk in pks
    ]

    def run(chunk: list[Invocation]) -> list[list[Reply]]:
        if args.batch <= 1:
            return [dispatcher.dispatch(invocation) for invocation in chunk]
        answers: list[list[Reply]] = []
        for start in range(0, len(chunk), args.batch):
            answers += dispatcher.dispatch_many(chunk[start : start + args.batch])
        return answers

    half = len(invocations) // 2
    run(invocations[:half])  # warm-up
    measured = invocations[half:]
    profile = cProfile.Profile() if args.profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profile is not None:
        profile.enable()
    answers = run(measured)
    if profile is not None:
        profile.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    templates = {answer[0].template for answer in answers}
    if templates != {"replies/signed.j2"}:
        print(f"unexpected replies: {templates}")
        return 1
    print(
        f"batch {args.batch}: {len(measured)} signatures, {wall * 1000 / len(measured):.3f} ms "
        f"wall, {cpu * 1000 / len(measured):.3f} ms CPU each"
        + (" (profiled: slower)" if profile is not None else "")
    )
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
