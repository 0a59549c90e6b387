"""Group commit: the worker runs the commands waiting for it in one transaction, each in a
savepoint, and answers them only after the one commit (DESIGN.md rules 2, 3, 11 and 12)."""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import LETTER, create_example_letter, import_example_roster, reply_kind
from sqlalchemy import event, text
from sqlmodel import Session, col, select

from bot.config import Settings
from bot.core import CommandError, Context, Dispatcher, Invocation, Registry, Reply
from bot.db import Database
from bot.models import AuditEvent, HandledEvent, Signature
from bot.platforms.base import render_reply
from bot.store import audit, events, letters, members, signatures
from bot.workers import _FRAME, _Requests, _serve
from handlers import REGISTRY

SLUG = "interpol-2021"
MEMBERS = ["au-abetz", "au-andrews", "au-antic", "au-christensen", "be-cogolati", "ca-cotler"]


def _sign(user: str, event_id: str = "", slug: str = SLUG) -> Invocation:
    reply_to = {"response_url": f"https://hooks.example/{event_id}"} if event_id else None
    return Invocation("console", "#m", user, "sign", [slug], event_id=event_id, reply_to=reply_to)


def _kind(replies: list[Reply]) -> str:
    (reply,) = replies
    return reply_kind(render_reply(reply, "text"))


def _signers(database: Database, slug: str = SLUG) -> list[str]:
    with database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        assert letter is not None
        query = select(Signature).where(
            Signature.letter_pk == letter.id, col(Signature.withdrawn_at).is_(None)
        )
        found = []
        for signature in session.exec(query).all():
            member = members.get_member_by_pk(session, pk=signature.member_pk)
            assert member is not None
            found.append(member.member_id)
        return sorted(found)


def _verified(database: Database) -> int:
    """The audit chain verifies; its length."""
    with database.session() as session:
        assert audit.verify_chain(session) == []
        head = audit.chain_head(session)
        return head[0] if head else 0


def _commits(database: Database) -> Iterator[list[int]]:
    """Counts the transactions that commit (one list entry each)."""
    seen: list[int] = []

    def count(_conn: Any) -> None:
        seen.append(1)

    event.listen(database.engine, "commit", count)
    try:
        yield seen
    finally:
        event.remove(database.engine, "commit", count)


@pytest.fixture
def ready(settings: Settings, database: Database) -> Database:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    return database


def _registry_with_failures() -> Registry:
    """The real commands, and two that write (a signature, an audit event) and then fail."""
    registry = Registry()
    registry.commands = dict(REGISTRY.commands)

    def _write(ctx: Context, args: list[str]) -> None:
        letter = letters.get_letter(ctx.session, slug=SLUG)
        member = members.get_member(ctx.session, member_id=args[0])
        assert letter is not None and member is not None
        signatures.sign(
            ctx.session,
            letter=letter,
            member=member,
            at=ctx.now,
            via_platform="console",
            via_external_id=args[0],
        )
        audit.append(ctx.session, actor=ctx.actor, action="test.failed", member_id=args[0])

    @registry.command("refuse", usage="refuse MEMBER", template="replies/error.j2")
    def refuse(ctx: Context, args: list[str]) -> dict[str, Any]:
        _write(ctx, args)
        raise CommandError("Refused after writing.")

    @registry.command("crash", usage="crash MEMBER", template="replies/error.j2")
    def crash(ctx: Context, args: list[str]) -> dict[str, Any]:
        _write(ctx, args)
        raise RuntimeError("a bug after writing")

    return registry


def test_a_batch_commits_once_and_answers_every_command(
    settings: Settings, ready: Database
) -> None:
    dispatcher = Dispatcher(settings, ready, REGISTRY)
    batch = [_sign(user, f"e-{user}") for user in MEMBERS[:4]]
    batch.append(_sign(MEMBERS[0], "e-again"))  # the same member again, in the same batch
    batch.append(_sign(MEMBERS[1], f"e-{MEMBERS[1]}"))  # a retry of an event in this batch
    for seen in _commits(ready):
        results = dispatcher.dispatch_many(batch)
        assert len(seen) == 1
    assert [_kind(r) for r in results[:5]] == ["signed"] * 4 + ["already_signed"]
    assert results[5] == []  # a retry: it ran once, and is answered once
    assert _signers(ready) == sorted(MEMBERS[:4])
    with ready.session() as session:
        rows = session.exec(select(HandledEvent)).all()
        assert sorted(row.event_id for row in rows) == sorted(
            [f"e-{user}" for user in MEMBERS[:4]] + ["e-again"]
        )
        assert {row.state for row in rows} == {"done"}
        added = session.exec(select(AuditEvent).where(AuditEvent.action == "signature.added")).all()
        assert sorted(e.member_id or "" for e in added) == sorted(MEMBERS[:4])
    _verified(ready)


def test_a_received_command_replayed_in_one_batch_runs_once(
    settings: Settings, ready: Database
) -> None:
    """Acknowledged without its answer (kept by `receive`), then delivered twice to one batch."""
    invocation = _sign("au-abetz", "e-kept")
    with ready.session() as session:
        assert events.receive(
            session,
            platform="console",
            event_id="e-kept",
            invocation=invocation,
            reply_to=invocation.reply_to or {},
        )
    results = Dispatcher(settings, ready, REGISTRY).dispatch_many([invocation, invocation])
    assert _kind(results[0]) == "signed"
    assert results[1] == []
    with ready.session() as session:
        row = events.get_event(session, platform="console", event_id="e-kept")
        assert row is not None and row.state == events.DONE
        assert row.answered_at is None  # acknowledged without its answer: still owed


def test_a_failing_command_loses_only_its_own_writes(settings: Settings, ready: Database) -> None:
    dispatcher = Dispatcher(settings, ready, _registry_with_failures())
    refused = Invocation(
        "console", "#m", "coordinator", "refuse", ["au-antic"], event_id="e-refuse",
        reply_to={"response_url": "https://hooks.example/refuse"},
    )  # fmt: skip
    crashed = Invocation("console", "#m", "coordinator", "crash", ["au-christensen"])
    batch = [
        _sign("au-abetz", "e1"),
        refused,
        _sign("au-andrews", "e2"),
        crashed,
        _sign("be-cogolati", "e3"),
        Invocation("console", "#m", "au-abetz", "no-such-command"),
    ]
    before = _verified(ready)
    for seen in _commits(ready):
        results = dispatcher.dispatch_many(batch)
        assert len(seen) == 1
    assert [_kind(results[i]) for i in (0, 2, 4)] == ["signed"] * 3
    ((error,), (apology,), (unknown,)) = results[1], results[3], results[5]
    assert error.template == "replies/error.j2"
    assert error.context == {"message": "Refused after writing."}
    assert apology.template == "replies/apology.j2" and apology.context["error_id"]
    assert "Unknown command" in unknown.context["message"]
    # The failed commands' signatures, audit events and journal claims are gone...
    assert _signers(ready) == ["au-abetz", "au-andrews", "be-cogolati"]
    with ready.session() as session:
        failed = session.exec(select(AuditEvent).where(AuditEvent.action == "test.failed")).all()
        assert failed == []
        claimed = session.exec(select(HandledEvent.event_id)).all()
        assert sorted(claimed) == ["e1", "e2", "e3"]  # a retry of e-refuse runs again
    # ...and the chain runs on, linear, through the savepoints rolled back.
    assert _verified(ready) == before + 3


def test_a_link_earlier_in_a_batch_is_seen_by_a_later_command(
    settings: Settings, ready: Database
) -> None:
    """The batch looks up its callers at once; a link made by an earlier command counts."""
    dispatcher = Dispatcher(settings, ready, REGISTRY)
    link = Invocation("console", "#m", "coordinator", "cosign", ["link", "newcomer", "au-abetz"])
    before = Invocation("console", "#m", "newcomer", "sign", [SLUG])
    results = dispatcher.dispatch_many([before, link, _sign("newcomer")])
    assert _kind(results[0]) == "unknown_account"
    assert results[1][0].template == "replies/linked.j2"
    assert _kind(results[2]) == "signed"
    assert _signers(ready) == ["au-abetz"]


def test_letters_posted_or_closed_earlier_in_a_batch_are_seen_by_a_later_command(
    settings: Settings, ready: Database
) -> None:
    """The open letters of a channel are looked up once a batch; a post or a close made by an
    earlier command counts for the commands after it."""
    second = _second_letter(ready, settings)  # open in #other
    dispatcher = Dispatcher(settings, ready, REGISTRY)

    def say(user: str, channel: str, command: str, *args: str) -> Invocation:
        return Invocation("console", channel, user, command, list(args))

    results = dispatcher.dispatch_many(
        [
            say("au-abetz", "#members", "sign"),  # one letter open here: that one
            say("coordinator", "#members", "cosign", "post", second),
            say("au-andrews", "#members", "sign"),  # now two: which one?
            say("au-antic", "#other", "sign"),
            say("coordinator", "#other", "cosign", "close", second),
            say("au-christensen", "#members", "sign"),  # one again
        ]
    )
    texts = [render_reply(r[0], "text") for r in results]
    assert [_kind(results[i]) for i in (0, 3, 5)] == ["signed"] * 3, texts
    assert texts[2].startswith("Several letters are open here"), texts[2]
    assert _signers(ready) == ["au-abetz", "au-christensen"]
    assert _signers(ready, second) == ["au-antic"]


def test_a_letter_closed_in_the_transaction_is_no_longer_open_in_its_channel(
    ready: Database,
) -> None:
    with ready.session() as session:
        (letter,) = letters.open_letters_in_channel(
            session, platform="console", channel="#members"
        )
        assert letters.close_letter(session, letter=letter, actor="test", at=letter.deadline)
        still = letters.open_letters_in_channel(session, platform="console", channel="#members")
        assert still == []


def test_nobody_is_answered_before_the_commit(settings: Settings, ready: Database) -> None:
    """The commit fails: nobody was told "signed" and nothing was kept."""
    dispatcher = Dispatcher(settings, ready, REGISTRY)

    def fail(session: Session) -> None:
        if session.get_nested_transaction() is None:  # the commit, not a savepoint's release
            raise RuntimeError("the disk is full")

    event.listen(Session, "before_commit", fail)
    try:
        results = dispatcher.dispatch_many([_sign(user, f"e-{user}") for user in MEMBERS])
    finally:
        event.remove(Session, "before_commit", fail)
    assert {_kind(r) for r in results} == {"apology"}
    assert _signers(ready) == []
    with ready.session() as session:
        assert session.exec(select(HandledEvent)).all() == []


def test_a_batch_whose_commit_fails_runs_each_command_alone(
    settings: Settings, ready: Database
) -> None:
    dispatcher = Dispatcher(settings, ready, REGISTRY)
    failures = [RuntimeError("the first commit fails")]

    def fail_once(session: Session) -> None:
        if failures and session.get_nested_transaction() is None:
            raise failures.pop()

    event.listen(Session, "before_commit", fail_once)
    try:
        for seen in _commits(ready):
            results = dispatcher.dispatch_many([_sign(user, f"e-{user}") for user in MEMBERS])
            assert len(seen) == len(MEMBERS)  # the batch's commit failed: one each
    finally:
        event.remove(Session, "before_commit", fail_once)
    assert [_kind(r) for r in results] == ["signed"] * len(MEMBERS)
    assert _signers(ready) == sorted(MEMBERS)
    _verified(ready)


def _frames(invocations: list[Invocation]) -> bytes:
    data = b""
    for job, invocation in enumerate(invocations):
        body = pickle.dumps((job, invocation))
        data += _FRAME.pack(len(body)) + body
    return data


def _answers(fd: int) -> dict[int, Any]:
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    answers = {}
    while data:
        (size,) = _FRAME.unpack_from(data)
        job, result = pickle.loads(data[_FRAME.size : _FRAME.size + size])
        answers[job] = result
        data = data[_FRAME.size + size :]
    return answers


def test_the_requests_waiting_on_the_pipe_are_taken_together() -> None:
    read, write = os.pipe()
    try:
        requests = _Requests(read)
        data = _frames([_sign(user) for user in MEMBERS[:3]])
        os.write(write, data + data[:7])  # three requests, and the start of a fourth
        assert len(requests.batch(64)) == 3  # without waiting for the fourth
        os.write(write, data[7 : len(data) // 3])
        assert len(requests.batch(64)) == 1
        os.write(write, data * 2)
        assert len(requests.batch(4)) == 4  # the bound
        assert len(requests.batch(4)) == 2
        os.close(write)
        write = -1
        assert requests.batch(64) == []  # the parent closed the pipe
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)


def test_the_worker_answers_a_batch_only_after_its_commit(
    settings: Settings, ready: Database
) -> None:
    """The worker's loop: every waiting request in one transaction; at its commit no answer has
    been written yet; then all are answered."""
    dispatcher = Dispatcher(settings, ready, REGISTRY)
    requests, to_worker = os.pipe()
    from_worker, replies = os.pipe()
    os.set_blocking(from_worker, False)
    written_at_commit: list[int] = []

    def look(session: Session) -> None:
        if session.get_nested_transaction() is not None:
            return  # a savepoint's release
        try:
            written_at_commit.append(len(os.read(from_worker, 1 << 16)))
        except BlockingIOError:
            written_at_commit.append(0)

    batch = [_sign(user, f"e-{user}") for user in MEMBERS]
    os.write(to_worker, _frames(batch))
    os.close(to_worker)
    event.listen(Session, "before_commit", look)
    try:
        _serve(dispatcher, requests, replies)
    finally:
        event.remove(Session, "before_commit", look)
        os.close(requests)
        os.close(replies)
    os.set_blocking(from_worker, True)
    answers = _answers(from_worker)
    os.close(from_worker)
    assert written_at_commit == [0]  # one transaction for all six, and nothing sent before it
    assert sorted(answers) == list(range(len(MEMBERS)))
    assert [_kind(answers[job]) for job in sorted(answers)] == ["signed"] * len(MEMBERS)
    assert _signers(ready) == sorted(MEMBERS)


def _second_letter(database: Database, settings: Settings) -> str:
    source = LETTER.read_text(encoding="utf-8").replace(f'slug = "{SLUG}"', 'slug = "second"')
    create_example_letter(database, settings, text=source, post_to=["console:#other"])
    return "second"


def _postgres_only(database: Database) -> None:
    if database.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL: SQLite serialises every transaction at BEGIN IMMEDIATE")


def test_two_replicas_batching_keep_one_linear_chain(
    settings: Settings, ready: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes (two engines) run overlapping batches on one PostgreSQL database: some
    members sign through both, some events reach both. One signature each, one run per event,
    one chain."""
    _postgres_only(ready)
    caplog.set_level(logging.INFO, logger="bot.core")
    with ready.session() as session:
        everyone = [m.member_id for m in members.list_members(session) if m.role == "member"]
    half = len(everyone) // 2
    replicas = [Dispatcher(settings, Database(settings.database.url), REGISTRY) for _ in range(2)]
    results: list[list[list[Reply]]] = [[], []]
    start = threading.Barrier(2)

    def run(index: int) -> None:
        start.wait()
        # its own members (the same event ids as the other replica's: one runs, once), then
        # half of everyone again under events of its own (one signature; then "already")
        mine = [(user, f"e-{user}") for user in everyone[index::2]]
        mine += [(user, f"r{index}-{user}") for user in everyone[:half]]
        mine += [(user, f"e-{user}") for user in everyone[1 - index :: 2]]
        for offset in range(0, len(mine), 8):
            batch = [_sign(user, event_id) for user, event_id in mine[offset : offset + 8]]
            results[index] += replicas[index].dispatch_many(batch)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for replica in replicas:
        replica.database.dispose()
    assert "Deadlock" not in caplog.text  # a later command that waited gave way instead
    kinds = [_kind(r) for r in results[0] + results[1] if r]  # [] for an event run already
    assert sorted(kinds) == sorted(["signed"] * len(everyone) + ["already_signed"] * 2 * half)
    assert _signers(ready) == sorted(everyone)
    with ready.session() as session:
        assert len(session.exec(select(HandledEvent)).all()) == len(everyone) + 2 * half
    _verified(ready)


def test_a_batch_gives_way_instead_of_deadlocking(settings: Settings, ready: Database) -> None:
    """A batch holds the audit chain's lock from its first signature; another transaction holds
    a letter exclusively and waits for that lock; the batch's next signature on that letter
    would wait for the other transaction: a cycle PostgreSQL breaks by failing one of them.
    The batch gives way instead: that command runs alone after the commit, and both succeed."""
    _postgres_only(ready)
    second = _second_letter(ready, settings)
    registry = Registry()
    registry.commands = dict(REGISTRY.commands)
    audit_held, other_waits = threading.Event(), threading.Event()

    @registry.command("pause", usage="pause", template="replies/error.j2")
    def pause(ctx: Context, args: list[str]) -> dict[str, Any]:
        audit_held.set()
        assert other_waits.wait(10)
        return {"message": "paused"}

    dispatcher = Dispatcher(settings, ready, registry)
    other_error: list[BaseException] = []

    def other() -> None:
        """Like a coordinator's update of the second letter: exclusive, then an audit event."""
        try:
            assert audit_held.wait(10)
            with ready.session() as session:
                letter = letters.get_letter(session, slug=second)
                assert letter is not None
                letters.lock_letter(session, letter=letter, exclusive=True)
                threading.Thread(target=_tell_when_waiting, args=(ready, other_waits)).start()
                audit.append(session, actor="test", action="letter.touched", letter_slug=second)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            other_error.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    pause_command = Invocation("console", "#m", "au-abetz", "pause")
    batch = [_sign("au-abetz", "e1"), pause_command, _sign("au-andrews", "e2", slug=second)]
    results = dispatcher.dispatch_many(batch)
    thread.join(30)
    assert other_error == []
    assert _kind(results[0]) == "signed" and _kind(results[2]) == "signed"
    assert _signers(ready) == ["au-abetz"]
    assert _signers(ready, second) == ["au-andrews"]
    with ready.session() as session:
        actions = session.exec(select(AuditEvent.action).order_by(col(AuditEvent.seq))).all()
        # the batch committed first, then the other transaction, then the command given way
        assert actions[-3:] == ["signature.added", "letter.touched", "signature.added"]
    _verified(ready)


def _tell_when_waiting(database: Database, waiting: threading.Event) -> None:
    """Set `waiting` once some session waits for an advisory lock (the audit chain's)."""
    deadline = time.monotonic() + 10
    with database.engine.connect() as conn:
        while time.monotonic() < deadline:
            found = conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE d.datname = current_database() AND l.locktype = 'advisory' "
                    "AND NOT l.granted"
                )
            ).scalar()
            conn.rollback()
            if found:
                waiting.set()
                return
            time.sleep(0.02)


def test_a_letter_locked_earlier_in_the_transaction_is_not_locked_again(
    settings: Settings, ready: Database
) -> None:
    """PostgreSQL: a batch's signatures take the letter FOR SHARE once; taking it exclusively
    still locks it again, and so does any lock after a savepoint rolled back (which released
    the locks taken in it)."""
    _postgres_only(ready)
    locks: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FOR SHARE" in statement or "FOR UPDATE" in statement:
            locks.append("share" if "FOR SHARE" in statement else "update")

    event.listen(ready.engine, "before_cursor_execute", seen)
    try:
        with ready.session() as session:
            letter = letters.get_letter(session, slug=SLUG)
            assert letter is not None
            for _ in range(3):
                with session.begin_nested():
                    letters.lock_letter(session, letter=letter)
            assert locks == ["share"]
            letters.lock_letter(session, letter=letter, exclusive=True)
            letters.lock_letter(session, letter=letter)
            assert locks == ["share", "update"]
            with pytest.raises(RuntimeError), session.begin_nested():
                raise RuntimeError("rolls the savepoint back")
            letters.lock_letter(session, letter=letter)
            assert locks == ["share", "update", "share"]
    finally:
        event.remove(ready.engine, "before_cursor_execute", seen)
