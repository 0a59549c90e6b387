"""The store on every backend: idempotent signing, exactly-once close, outbox, audit chain."""

from __future__ import annotations

import threading
from datetime import timedelta

from helpers import create_example_letter, import_example_roster
from sqlalchemy import text

from bot.campaign import close_and_announce
from bot.config import Settings
from bot.db import Database
from bot.models import OutboxMessage
from bot.models._types import utcnow
from bot.store import audit, letters, members, outbox, signatures


def _member(database: Database, member_id: str):  # type: ignore[no-untyped-def]
    with database.session() as session:
        member = members.get_member(session, member_id=member_id)
        assert member is not None
        return member


def test_sign_is_idempotent_and_withdraw_allows_resigning(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    letter = create_example_letter(database, settings, post_to=["console:#members"])
    abetz = _member(database, "au-abetz")
    now = utcnow()
    with database.session() as session:
        first = signatures.sign(
            session, letter=letter, member=abetz, at=now, via_platform="slack", via_external_id="U1"
        )
        assert first.created
    with database.session() as session:
        again = signatures.sign(
            session,
            letter=letter,
            member=abetz,
            at=now + timedelta(1),
            via_platform="matrix",
            via_external_id="@a:x",
        )
        assert not again.created
        assert again.signature.via_platform == "slack"  # the first one stands
        assert signatures.count_active(session, letter_pk=letter.id) == 1
    with database.session() as session:
        assert signatures.withdraw(session, letter=letter, member=abetz, at=now) is not None
        assert signatures.withdraw(session, letter=letter, member=abetz, at=now) is None
        assert signatures.count_active(session, letter_pk=letter.id) == 0
    with database.session() as session:
        assert signatures.sign(
            session,
            letter=letter,
            member=abetz,
            at=now,
            via_platform="console",
            via_external_id="au-abetz",
        ).created
        assert signatures.count_active(session, letter_pk=letter.id) == 1


def test_concurrent_signs_of_one_member_store_one_signature(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    letter = create_example_letter(database, settings, post_to=["console:#members"])
    member = _member(database, "uk-alton")
    created: list[bool] = []
    barrier = threading.Barrier(6)

    def attempt(i: int) -> None:
        barrier.wait()
        with database.session() as session:
            outcome = signatures.sign(
                session,
                letter=letter,
                member=member,
                at=utcnow(),
                via_platform="slack",
                via_external_id=f"U{i}",
            )
            created.append(outcome.created)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(created) == [False] * 5 + [True]
    with database.session() as session:
        assert signatures.count_active(session, letter_pk=letter.id) == 1


def test_close_compiles_exactly_once_under_a_race(database: Database, settings: Settings) -> None:
    import_example_roster(database)
    letter = create_example_letter(database, settings, post_to=["console:#members"])
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def close() -> None:
        barrier.wait()
        with database.session() as session:
            row = letters.get_letter(session, slug=letter.slug)
            assert row is not None
            results.append(
                close_and_announce(
                    session, settings=settings, letter=row, actor="race", now=utcnow()
                )
                is not None
            )

    threads = [threading.Thread(target=close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    with database.session() as session:
        keys = [
            m.idempotency_key
            for m in session.exec(__import__("sqlmodel").select(OutboxMessage)).all()
        ]
        assert sum(k.startswith("compiled:") for k in keys) == 1
        assert sum(k.startswith("closed:") for k in keys) == 1
        closes = [
            e
            for e in audit.list_events(session, letter_slug=letter.slug)
            if e.action == "letter.closed"
        ]
        assert len(closes) == 1


def test_outbox_enqueue_is_idempotent_and_claims_are_exclusive(database: Database) -> None:
    now = utcnow()
    with database.session() as session:
        assert (
            outbox.enqueue(
                session,
                key="k1",
                platform="console",
                channel="#a",
                kind="message",
                payload={"template": "replies/error.j2", "context": {"message": "hi"}},
            )
            is not None
        )
        assert (
            outbox.enqueue(
                session, key="k1", platform="console", channel="#a", kind="message", payload={}
            )
            is None
        )
    with database.session() as session:
        (message,) = outbox.due(session, platforms=["console"], now=now + timedelta(seconds=1))
    assert message.id is not None
    claimed_at = message.next_attempt_at + timedelta(seconds=1)  # due by its time from here on
    lease = timedelta(minutes=1)
    with database.session() as session:
        assert outbox.claim(session, message_id=message.id, now=claimed_at, lease=lease)
    during = claimed_at + timedelta(seconds=30)
    with database.session() as session:
        assert not outbox.claim(session, message_id=message.id, now=during, lease=lease)
        assert outbox.due(session, platforms=["console"], now=during) == []  # only the lease
    later = claimed_at + timedelta(minutes=2)  # lease expired: a crashed sender's row comes back
    with database.session() as session:
        assert [m.id for m in outbox.due(session, platforms=["console"], now=later)] == [message.id]
        token = outbox.claim(session, message_id=message.id, now=later, lease=lease)
        assert token is not None
        assert outbox.mark_delivered(session, message_id=message.id, token=token, at=later)
    with database.session() as session:
        assert outbox.pending_count(session) == 0
        assert outbox.due(session, platforms=["console"], now=later + timedelta(hours=1)) == []


def test_outbox_outcomes_are_recorded_only_under_the_claim_held(database: Database) -> None:
    """A sender whose lease lapsed and was taken over can neither renew it nor record an outcome
    over the new holder's; each claim has its own token."""
    with database.session() as session:
        queued = outbox.enqueue(
            session, key="k1", platform="console", channel="#a", kind="message", payload={}
        )
        assert queued is not None and queued.id is not None
        message_id = queued.id
        start = queued.next_attempt_at + timedelta(seconds=1)
    lease = timedelta(minutes=1)
    with database.session() as session:
        stale = outbox.claim(session, message_id=message_id, now=start, lease=lease)
        assert stale is not None
    with database.session() as session:  # renewed while held: still held past the first lease
        assert outbox.renew(
            session, message_id=message_id, token=stale, now=start + lease, lease=lease
        )
        assert not outbox.claim(
            session, message_id=message_id, now=start + lease + timedelta(seconds=30), lease=lease
        )
    later = start + 3 * lease  # the renewals stopped: the lease lapsed, another sender takes over
    with database.session() as session:
        fresh = outbox.claim(session, message_id=message_id, now=later, lease=lease)
        assert fresh is not None and fresh != stale
    with database.session() as session:
        assert not outbox.renew(session, message_id=message_id, token=stale, now=later, lease=lease)
        assert (
            outbox.mark_retry(
                session,
                message_id=message_id,
                token=stale,
                error="ratelimited",
                next_attempt_at=later + timedelta(hours=1),
                give_up=True,
            )
            is None
        )
        assert outbox.mark_delivered(session, message_id=message_id, token=stale, at=later) is None
    with database.session() as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        assert row.delivered_at is None and row.failed_at is None and row.last_error is None
        assert row.claim_token == fresh and row.attempts == 2
    with database.session() as session:
        done = outbox.mark_delivered(
            session, message_id=message_id, token=fresh, at=later, result={"ts": "2"}
        )
        assert done is not None and done.result == {"ts": "2"} and done.claim_token is None
    with database.session() as session:  # a late stale outcome does not undo the delivery
        assert (
            outbox.mark_retry(
                session,
                message_id=message_id,
                token=stale,
                error="ratelimited",
                next_attempt_at=later,
                give_up=True,
            )
            is None
        )
        assert outbox.mark_delivered(session, message_id=message_id, token=fresh, at=later) is None
    with database.session() as session:
        row = session.get(OutboxMessage, message_id)
        assert row is not None
        assert row.delivered_at is not None and row.failed_at is None and row.last_error is None
        assert row.result == {"ts": "2"}


def test_audit_chain_verifies_and_detects_tampering(database: Database, settings: Settings) -> None:
    import_example_roster(database)
    letter = create_example_letter(database, settings, post_to=["console:#members"])
    with database.session() as session:
        assert audit.verify_chain(session) == []
        events = audit.list_events(session, letter_slug=letter.slug)
        assert [e.action for e in events][:2] == ["letter.created", "letter.opened"]
        target = events[0].seq
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE auditevent SET actor = 'mallory' WHERE seq = :s"), {"s": target})
    with database.session() as session:
        problems = audit.verify_chain(session)
    assert [p.seq for p in problems] == [target]


def test_audit_chain_detects_a_deleted_row(database: Database, settings: Settings) -> None:
    import_example_roster(database)
    with database.engine.begin() as conn:
        conn.execute(text("DELETE FROM auditevent WHERE seq = 3"))
    with database.session() as session:
        problems = audit.verify_chain(session)
    assert problems and problems[0].seq == 4
