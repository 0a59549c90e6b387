"""Roster CSV: parsing and validation (all or nothing, physical line numbers), import and export."""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from bot.db import Database
from bot.letterfile import parse_letter
from bot.models import Letter, Member
from bot.roster import COLUMNS, RosterError, export_roster, import_roster, parse_roster
from bot.store import letters, signatures
from bot.store.members import get_member, member_for_account

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ROSTERS = Path(__file__).resolve().parent / "data" / "rosters"
HEADER = ",".join(COLUMNS) + "\n"


def problems_of(data: bytes | str) -> list[str]:
    with pytest.raises(RosterError) as caught:
        parse_roster(data)
    assert caught.value.problems, "a refused roster must say why"
    return caught.value.problems


def problem_at(problems: list[str], line: int, *fragments: str) -> str:
    """The one problem reported for `line`, which must mention every fragment."""
    matching = [p for p in problems if re.match(rf"line {line}\b", p)]
    assert len(matching) == 1, f"expected one problem on line {line}: {problems}"
    for fragment in fragments:
        assert fragment in matching[0], f"{fragment!r} not in {matching[0]!r}"
    return matching[0]


# --- parse_roster -----------------------------------------------------------------------------


def test_example_roster_parses() -> None:
    rows = parse_roster((EXAMPLES / "ipac-roster.csv").read_bytes())
    assert len(rows) == 48
    assert rows[0].line == 2 and rows[0].values["member_id"] == "au-abetz"
    coordinator = rows[-1].values
    assert coordinator["role"] == "coordinator" and coordinator["group"] == ""


def test_every_problem_is_reported_with_its_physical_line() -> None:
    problems = problems_of((ROSTERS / "problems.csv").read_bytes())
    problem_at(problems, 3, "member_id is missing")
    problem_at(problems, 6, "family_name is missing")
    problem_at(problems, 7, "group is missing")
    problem_at(problems, 8, "duplicate member_id", "au-abetz", "line 2")
    problem_at(problems, 9, "duplicate slack_id", "U0AAA", "line 2")
    problem_at(problems, 10, "duplicate matrix_id", "@abetz:ipac.org", "line 2")
    problem_at(problems, 11, "cadic@senat.fr")
    problem_at(problems, 12, "unknown role", "chair")
    problem_at(problems, 13, "expected 11 fields", "found 6")
    # A name broken over two lines (4-5) would print as a broken signatory line: refused at the
    # line the record starts on.
    problem_at(problems, 4, "line break inside given_name")
    # Valid rows (2 and the bare coordinator on 14) raise nothing.
    assert len(problems) == 10


def test_refused_roster_returns_nothing_even_for_good_rows() -> None:
    data = HEADER + "au-abetz,,Eric,Abetz,,Australia,,,,,member\nbad,,x,,,G,,,,,member\n"
    problems = problems_of(data)
    assert problems == ["line 3: family_name is missing"]


def test_coordinator_rows_may_leave_group_and_names_empty() -> None:
    rows = parse_roster(HEADER + "secretariat,,,,,,,,,,coordinator\n")
    assert rows[0].values["role"] == "coordinator"


def test_member_role_is_the_default() -> None:
    rows = parse_roster(HEADER + "au-abetz,,Eric,Abetz,,Australia,,,,,\n")
    assert rows[0].values["role"] == "member"


def test_member_without_family_name_is_refused_even_with_display_name() -> None:
    problems = problems_of(HEADER + "x,,,,,Germany,Somebody Important,,,,member\n")
    problem_at(problems, 2, "family_name")


def test_line_numbers_after_a_multiline_field_count_physical_lines() -> None:
    data = HEADER + (
        'be-multi,,"Jean\nPierre\nMarie",Dupont,,Belgium,,,,,member\n'  # lines 2-4
        "\n"  # line 5, blank
        "ca-x,,Irwin,,,Canada,,,,,member\n"  # line 6
    )
    assert problems_of(data) == [
        "line 2: line break inside given_name",
        "line 6: family_name is missing",
    ]


def test_problem_in_a_multiline_record_names_the_line_it_starts_on() -> None:
    data = HEADER + 'be-multi,,"Jean\nPierre",,,Belgium,,,,,member\n'  # lines 2-3
    assert problems_of(data) == [
        "line 2: family_name is missing",
        "line 2: line break inside given_name",
    ]


@pytest.mark.parametrize("as_bytes", [True, False])
def test_utf8_bom_is_accepted(as_bytes: bool) -> None:
    text = "\ufeff" + (EXAMPLES / "ipac-roster.csv").read_text(encoding="utf-8")
    data = text.encode("utf-8") if as_bytes else text
    rows = parse_roster(data)
    assert rows[0].values["member_id"] == "au-abetz"
    assert len(rows) == 48


def test_columns_in_any_order() -> None:
    data = codecs.BOM_UTF8 + (ROSTERS / "reordered.csv").read_bytes()
    rows = {r.values["member_id"]: r.values for r in parse_roster(data)}
    assert rows["au-abetz"] == {
        "member_id": "au-abetz",
        "title": "Senator",
        "given_name": "Eric",
        "family_name": "Abetz",
        "post_nominals": "",
        "group": "Australia",
        "display_name": "",
        "email": "abetz@example.org",
        "slack_id": "U0ABETZ",
        "matrix_id": "@abetz:ipac.example",
        "role": "member",
    }
    assert rows["lt-sakaliene"]["family_name"] == "Šakalienė"
    assert rows["secretariat"]["role"] == "coordinator"


@pytest.mark.parametrize("column", ["member_id", "family_name", "group"])
def test_header_missing_a_required_column(column: str) -> None:
    header = [c for c in COLUMNS if c != column]
    problems = problems_of(",".join(header) + "\n")
    problem_at(problems, 1, "missing", column)


def test_empty_file_is_refused() -> None:
    problem_at(problems_of(b""), 1, "header")


def test_non_utf8_is_refused_with_a_message() -> None:
    data = HEADER.encode() + "fr-cadic,,Olivier,Cadic,,Français,,,,,member\n".encode("latin-1")
    problems = problems_of(data)
    assert len(problems) == 1 and "UTF-8" in problems[0]


@pytest.mark.parametrize(
    "matrix_id", ["abetz:ipac.org", "@abetz", "@Abetz:ipac.org", "@ab etz:ipac.org", "@a:b:c:d"]
)
def test_malformed_matrix_id(matrix_id: str) -> None:
    problems = problems_of(HEADER + f"au-abetz,,Eric,Abetz,,Australia,,,,{matrix_id},member\n")
    problem_at(problems, 2, "matrix_id")


def test_wellformed_matrix_ids_are_accepted() -> None:
    rows = parse_roster(
        HEADER
        + "a,,A,A,,G,,,,@abetz:ipac.org,member\n"
        + "b,,B,B,,G,,,,@b.x_y=z/1:matrix.example.org:8448,member\n"
    )
    assert [r.values["matrix_id"] for r in rows] == [
        "@abetz:ipac.org",
        "@b.x_y=z/1:matrix.example.org:8448",
    ]


# --- import / export --------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    database.upgrade()
    yield database
    database.dispose()


SMALL = HEADER + (
    "au-abetz,Senator,Eric,Abetz,,Australia,,abetz@example.org,U0ABETZ,@abetz:ipac.example,member\n"
    "lt-sakaliene,,Dovilė,Šakalienė,MP,Lithuania,,,U0SAKAL,,member\n"
    "secretariat,,,,,,,,U0COORD,@sec:ipac.example,coordinator\n"
)


def import_text(db: Database, data: str | bytes) -> tuple[int, int, int]:
    with db.session() as session:
        result = import_roster(session, data=data, actor="test")
    return result.created, result.updated, result.unchanged


def export_text(db: Database) -> str:
    with db.session() as session:
        return export_roster(session)


def members(session: Session) -> dict[str, Member]:
    return {m.member_id: m for m in session.exec(select(Member)).all()}


def open_example_letter(session: Session) -> Letter:
    now = datetime.now(UTC)
    source = parse_letter(
        (EXAMPLES / "interpol-2021.md").read_text(encoding="utf-8"), zone=UTC, now=now
    )
    letter = letters.create_letter(
        session, source=source, deadline=now + timedelta(days=3), actor="test"
    )
    assert letter is not None
    return letter


def test_import_creates_members_and_roster_identities(db: Database) -> None:
    assert import_text(db, SMALL) == (3, 0, 0)
    with db.session() as session:
        everyone = members(session)
        assert set(everyone) == {"au-abetz", "lt-sakaliene", "secretariat"}
        abetz = everyone["au-abetz"]
        assert (abetz.title, abetz.given_name, abetz.family_name, abetz.group) == (
            "Senator",
            "Eric",
            "Abetz",
            "Australia",
        )
        assert everyone["secretariat"].role == "coordinator"
        for platform, account, member_id in [
            ("slack", "U0ABETZ", "au-abetz"),
            ("matrix", "@abetz:ipac.example", "au-abetz"),
            ("slack", "U0SAKAL", "lt-sakaliene"),
            ("matrix", "@sec:ipac.example", "secretariat"),
        ]:
            owner = member_for_account(session, platform=platform, external_id=account)
            assert owner is not None and owner.member_id == member_id


def test_import_of_the_example_roster(db: Database) -> None:
    assert import_text(db, (EXAMPLES / "ipac-roster.csv").read_bytes()) == (48, 0, 0)


def test_reimport_updates_by_member_id_and_keeps_signatures(db: Database) -> None:
    import_text(db, SMALL)
    with db.session() as session:
        letter = open_example_letter(session)
        abetz = get_member(session, member_id="au-abetz")
        assert abetz is not None
        signed = signatures.sign(
            session,
            letter=letter,
            member=abetz,
            at=datetime.now(UTC),
            via_platform="slack",
            via_external_id="U0ABETZ",
        )
        assert signed.created
        letter_pk = letter.id
    assert letter_pk is not None
    moved = SMALL.replace("Abetz,,Australia,", "Abetz,,Tasmania,")
    without_sakaliene = "\n".join(line for line in moved.splitlines() if not line.startswith("lt-"))
    assert import_text(db, without_sakaliene) == (0, 1, 1)
    with db.session() as session:
        everyone = members(session)
        assert everyone["au-abetz"].group == "Tasmania"
        assert "lt-sakaliene" in everyone  # re-import never deletes
        assert signatures.count_active(session, letter_pk=letter_pk) == 1
        [signatory] = signatures.signatories(session, letter_pk=letter_pk)
        assert signatory.line == "Senator Eric Abetz (Tasmania)"


def test_export_then_import_is_a_no_op(db: Database) -> None:
    import_text(db, (EXAMPLES / "ipac-roster.csv").read_bytes())
    import_text(db, SMALL.replace("Dovilė", "Dovile"))  # update one, link chat ids
    exported = export_text(db)
    assert exported.splitlines()[0] == ",".join(COLUMNS)
    assert "au-abetz,Senator,Eric,Abetz,,Australia,,abetz@example.org,U0ABETZ," in exported
    assert import_text(db, exported) == (0, 0, 49)
    assert export_text(db) == exported


def test_exported_roster_round_trips_through_a_fresh_database(db: Database, tmp_path: Path) -> None:
    import_text(db, (ROSTERS / "reordered.csv").read_bytes())
    exported = export_text(db)
    other = Database(f"sqlite:///{tmp_path}/other.db")
    other.upgrade()
    try:
        assert import_text(other, exported) == (4, 0, 0)
        assert export_text(other) == exported
    finally:
        other.dispose()


def test_failing_import_changes_nothing(db: Database) -> None:
    import_text(db, SMALL)
    before = export_text(db)
    bad = (
        SMALL.replace("Australia", "Tasmania")
        + "new-member,,New,Person,,Nowhere,,,,,member\n"
        + "broken,,No,Group,,,,,,,member\n"
    )
    with pytest.raises(RosterError) as caught:
        import_text(db, bad)
    assert caught.value.problems == ["line 6: group is missing"]
    assert export_text(db) == before
    with db.session() as session:
        assert set(members(session)) == {"au-abetz", "lt-sakaliene", "secretariat"}


def test_chat_id_linked_to_another_member_refuses_the_whole_import(db: Database) -> None:
    import_text(db, SMALL)
    before = export_text(db)
    stolen = HEADER + (
        "uk-alton,Lord,(David),Alton,,United Kingdom,,,,,member\n"
        "au-intruder,,Ivan,Truder,,Australia,,,U0ABETZ,,member\n"
    )
    with pytest.raises(RosterError) as caught:
        import_text(db, stolen)
    problem_at(caught.value.problems, 3, "U0ABETZ", "au-abetz")
    assert export_text(db) == before


def test_reimport_can_correct_swapped_chat_ids(db: Database) -> None:
    import_text(db, SMALL)
    swapped = (
        SMALL.replace("U0ABETZ", "TMP").replace("U0SAKAL", "U0ABETZ").replace("TMP", "U0SAKAL")
    )
    import_text(db, swapped)
    with db.session() as session:
        owner = member_for_account(session, platform="slack", external_id="U0ABETZ")
        assert owner is not None and owner.member_id == "lt-sakaliene"
