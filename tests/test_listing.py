"""`status` lists names by keys stored on each member: the same order and names as the letter."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from helpers import ROSTER, create_example_letter, import_example_roster, sign_everyone
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import text, update
from sqlmodel import col, select

from bot.config import Settings
from bot.db import Database
from bot.models import Letter, Member, Signature
from bot.models._types import utcnow
from bot.names import FILING_KEY_PREFIX, Signatory, filing_key, group_signatories
from bot.roster import import_roster
from bot.status import status_view
from bot.store import members, signatures

# Names from many scripts, CJK (implicit UCA weights above the surrogate block) and unassigned
# code points included, with the prefixes and near-ties that decide filing order.
name_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "a", "A", "á", "Á", "ab", "a b", "a-b", "ab ", "Øre", "Oere", "Ö"]),
    st.text(alphabet="aáAÁbß-' 中文\U00020000\U000e0001\u0301", max_size=6),
)

member_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,4}\Z")  # as bot.roster allows


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(name_text, name_text, member_ids), min_size=2, max_size=8))
def test_filing_key_orders_names_as_the_letter_does(people: list[tuple[str, str, str]]) -> None:
    signatories = [Signatory(pk, "", "", family, given) for family, given, pk in people]
    by_collation = sorted(signatories, key=Signatory.sort_key)
    by_key = sorted(signatories, key=Signatory.filing_key)
    assert [s.sort_key() for s in by_key] == [s.sort_key() for s in by_collation]
    for s in signatories:
        assert "\x00" not in s.filing_key()  # PostgreSQL text cannot hold NUL
        s.filing_key().encode("utf-8")  # storable: no surrogates


def _view(database: Database, settings: Settings, *, details: bool = False):  # type: ignore[no-untyped-def]
    with database.session() as session:
        letter = session.exec(select(Letter)).one()
        return status_view(
            session,
            settings=settings,
            letter=letter,
            asker=None,
            coordinator=True,
            now=utcnow(),
            signing_details=details,
        )


def _letter_lines(database: Database) -> list[str]:
    """The signatory lines in the order the compiled letter prints them."""
    with database.session() as session:
        letter = session.exec(select(Letter)).one()
        assert letter.id is not None
        people = signatures.signatories(session, letter_pk=letter.id)
    return [s.line for group in group_signatories(people) for s in group.signatories]


def _sign_some(database: Database, member_ids: list[str]) -> None:
    with database.session() as session:
        letter = session.exec(select(Letter)).one()
        for member_id in member_ids:
            member = members.get_member(session, member_id=member_id)
            assert member is not None
            signatures.sign(
                session,
                letter=letter,
                member=member,
                at=utcnow(),
                via_platform="slack",
                via_external_id=member_id,
            )


def test_status_lists_signed_and_missing_names_in_the_letters_order(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    with database.session() as session:
        everyone = [m.member_id for m in members.list_members(session) if m.role == "member"]
    _sign_some(database, everyone[::2])
    view = _view(database, settings)
    assert [s.line for s in view.signatories] == _letter_lines(database)
    assert view.signatures == len(everyone[::2]) == sum(view.groups.values())
    # Those not signed, in the same order the letter would print them if they signed.
    _sign_some(database, everyone[1::2])
    assert [m.line for m in view.not_signed] == [
        line for line in _letter_lines(database) if line not in {s.line for s in view.signatories}
    ]


def test_status_json_says_when_and_how_each_signed(database: Database, settings: Settings) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    _sign_some(database, ["au-abetz"])
    chat = _view(database, settings)
    assert chat.signatories[0].signed_at is None  # chat does not show it: not read
    data = _view(database, settings, details=True).as_json()
    [entry] = data["signatories"]
    assert entry["member_id"] == "au-abetz" and entry["via"] == "slack"
    assert entry["name"] == "Senator Eric Abetz"
    signed_at = datetime.fromisoformat(entry["signed_at"].replace("Z", "+00:00"))
    assert abs(signed_at - utcnow()) < timedelta(minutes=5)


def test_a_renamed_member_is_listed_under_the_new_name_in_the_new_place(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    sign_everyone(database)
    first_line = _view(database, settings).signatories[0].line
    assert first_line == "Senator Eric Abetz (Australia)"
    renamed = ROSTER.read_text(encoding="utf-8").replace(
        "au-abetz,Senator,Eric,Abetz,", "au-abetz,Senator,Eric,Zweig,"
    )
    with database.session() as session:
        import_roster(session, data=renamed, actor="test")
    lines = [s.line for s in _view(database, settings).signatories]
    assert "Senator Eric Zweig (Australia)" in lines
    assert "Senator Eric Abetz (Australia)" not in lines
    assert lines == _letter_lines(database)
    assert lines.index("Senator Eric Zweig (Australia)") > lines.index(
        "Senator Kimberley Kitching (Australia)"
    )


def test_members_written_around_the_orm_are_listed_right_and_repaired_by_upgrade(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    sign_everyone(database)
    expected = _letter_lines(database)
    with database.session() as session:
        # As an older cosign, or a hand-written SQL fix, would leave them: no key, a key of
        # another format, a renamed member whose derived fields were not written.
        session.execute(
            update(Member).where(col(Member.member_id) == "au-abetz").values(
                filing_key=None, printed_name=None
            )
        )
        session.execute(
            update(Member).where(col(Member.member_id) == "be-cogolati").values(
                filing_key="00000000" + "x", printed_name="stale"
            )
        )
    lines = [s.line for s in _view(database, settings).signatories]
    assert lines == expected
    database.upgrade()
    with database.session() as session:
        keys = session.exec(select(Member.member_id, Member.filing_key)).all()
    assert all(key is not None and key.startswith(FILING_KEY_PREFIX) for _, key in keys)
    assert [s.line for s in _view(database, settings).signatories] == expected


def test_stored_key_is_the_members_own(database: Database) -> None:
    import_example_roster(database)
    with database.session() as session:
        member = members.get_member(session, member_id="au-abetz")
        assert member is not None
        assert member.filing_key == filing_key(
            family_name="Abetz", given_name="Eric", member_id="au-abetz"
        )
        assert member.printed_name == "Senator Eric Abetz"


def test_datetimes_read_back_as_the_same_utc_instant(
    database: Database, settings: Settings
) -> None:
    import_example_roster(database)
    create_example_letter(database, settings, post_to=["console:#members"])
    at = datetime(2026, 3, 1, 23, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5)))
    with database.session() as session:
        letter = session.exec(select(Letter)).one()
        member = members.get_member(session, member_id="au-abetz")
        assert member is not None
        signatures.sign(
            session, letter=letter, member=member, at=at, via_platform="slack", via_external_id="U"
        )
    with database.session() as session:
        stored = session.exec(select(Signature)).one()
        assert stored.signed_at == at and stored.signed_at.tzinfo == UTC
        assert stored.signed_at.hour == 4 and stored.signed_at.day == 2
        if database.engine.dialect.name == "sqlite":
            # Text with an offset (not what SQLAlchemy writes, but a hand edit might) still reads.
            session.execute(
                text("UPDATE signature SET signed_at = '2026-03-02 06:30:15.5+02:00'")
            )
            session.expire_all()
            again = session.exec(select(Signature)).one()
            assert again.signed_at == datetime(2026, 3, 2, 4, 30, 15, 500000, tzinfo=UTC)


# Run in a fresh interpreter: this pytest process has long since built the collator and holds
# far more objects than a bot, so nothing measured here would tell settle_heap's work apart.
HEAP_PROBE = """
import gc, json
from bot import names
from bot.serve import settle_heap
settle_heap()
collator = names._collator
tables = [] if collator is None else [collator, collator.table, collator.implicit_weights]
tracked = {id(o) for o in gc.get_objects()}  # what a full collection still walks
print(json.dumps({
    "built": collator is not None,
    "tables_walked": sum(id(t) in tracked for t in tables if gc.is_tracked(t)),
    "frozen": gc.get_freeze_count(),
    "walked": len(tracked),
}))
"""


def test_a_started_bot_keeps_the_collator_out_of_garbage_collections(tmp_path: Path) -> None:
    """`cosign run` builds the collator and freezes the heap once started (bot.serve)."""
    probe = subprocess.run(
        [sys.executable, "-c", HEAP_PROBE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    heap = json.loads(probe.stdout)
    assert heap["built"]  # built at start, not on the first request that sorts names
    assert heap["tables_walked"] == 0  # the collator's tables are out of the collector's sight
    assert heap["frozen"] > 150_000  # ~100,000 of them the collator's
    assert heap["walked"] < 10_000  # what a full collection still has to walk
