"""Texts that change (DESIGN.md §9, issue 13) on the console and the command line: numbered
versions, a material change asks each signer once with the word diff, re-confirming, --minor,
only current signatures compile, `letter diff`, and the refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ConsoleHarness
from helpers import LETTER, create_example_letter
from hypothesis import given
from hypothesis import strategies as st
from record_support import SLUG, Cli
from sqlmodel import col, select

from bot.config import Settings
from bot.db import Database
from bot.letterfile import letter_version, parse_letter
from bot.models import LetterVersion, Signature
from bot.models._types import utcnow
from bot.roster import import_roster
from bot.store import audit, letters, members, signatures, versions
from bot.textdiff import condensed, plain, word_diff
from bot.versions import VersionError, change_text

ROSTER = (
    "member_id,title,given_name,family_name,post_nominals,group,display_name,email,"
    "slack_id,matrix_id,role,acts_for\n"
    "au-abetz,Senator,Eric,Abetz,,Australia,,,,,member,\n"
    "au-andrews,,Kevin,Andrews,MP,Australia,,,,,member,\n"
    "uk-alton,Lord,(David),Alton,,United Kingdom,,,,,member,\n"
    "abetz-office,,Jane,Doe,,,,,,,staff,au-abetz\n"
)
ORIGINAL = LETTER.read_text(encoding="utf-8")
OLD_WORDS = "giving a green light"
# A material change: words the signers agreed to are replaced.
CHANGED = ORIGINAL.replace(OLD_WORDS, "handing a green light", 1)
# A typo-level change elsewhere in the text.
TYPO = ORIGINAL.replace("We", "We,", 1)


def setup(database: Database, settings: Settings) -> None:
    assert OLD_WORDS in ORIGINAL and CHANGED != ORIGINAL and TYPO != ORIGINAL
    with database.session() as session:
        import_roster(session, data=ROSTER, actor="test")
    create_example_letter(database, settings, post_to=["console:#members"])


def update(database: Database, settings: Settings, text: str, *, minor: bool = False) -> None:
    """`cosign letter update` in-process (the command line is tested on its own below)."""
    now = utcnow()
    source = parse_letter(text, zone=settings.letters.zone, now=now)
    with database.session() as session:
        letter = letters.get_letter(session, slug=SLUG)
        assert letter is not None
        change_text(
            session,
            letter=letter,
            source=source,
            deadline=None,
            minor=minor,
            actor="test",
            now=now,
        )


#: Where the next console message begins: a line "[#channel] ", "[dm @…] " or "[private @…] "
#: (a diff line may begin with "[-", so "[" alone is not enough).
NEXT = r"^\[(?:#|dm @|private @|cosign\])|\Z"


def dms(output: str, user: str) -> list[str]:
    """The direct messages to `user`, each whole (a message runs until the next one)."""
    found = re.findall(rf"^\[dm @{re.escape(user)}\] (.*?)(?={NEXT})", output, re.M | re.S)
    return [text.rstrip("\n") for text in found]


def replies(output: str, user: str) -> list[str]:
    return re.findall(rf"^\[private @{re.escape(user)}\] (.*)$", output, re.MULTILINE)


def counted(database: Database) -> list[str]:
    with database.session() as session:
        letter = letters.get_letter(session, slug=SLUG)
        assert letter is not None and letter.id is not None
        return sorted(s.member_id for s in signatures.signatories(session, letter_pk=letter.id))


def events(database: Database, action: str) -> list[dict[str, object]]:
    with database.session() as session:
        return [
            {"member_id": e.member_id, **e.detail}
            for e in audit.list_events(session, letter_slug=SLUG)
            if e.action == action
        ]


def status_json(database: Database, settings: Settings, tmp_path: Path) -> dict[str, object]:
    cli = Cli(tmp_path, settings.database.url)
    return json.loads(cli("status", SLUG, "--json").stdout)  # type: ignore[no-any-return]


# --- versions ---------------------------------------------------------------------------------


def test_every_text_is_a_numbered_version_with_its_sha256(
    database: Database, settings: Settings
) -> None:
    setup(database, settings)
    update(database, settings, CHANGED)
    update(database, settings, TYPO, minor=True)
    with database.session() as session:
        letter = letters.get_letter(session, slug=SLUG)
        assert letter is not None and letter.id is not None
        kept = versions.list_versions(session, letter_pk=letter.id)
        assert [v.number for v in kept] == [1, 2, 3] and letter.version_number == 3
        for version, text in zip(kept, (ORIGINAL, CHANGED, TYPO), strict=True):
            source = parse_letter(text, zone=settings.letters.zone, now=utcnow())
            assert version.sha256 == source.version == letter_version(
                title=version.title,
                date=version.date,
                addressees=list(version.addressees),
                body=version.body,
                closing=version.closing,
                signed_by=version.signed_by,
            )
        assert [v.minor for v in kept] == [False, False, True]
        assert letter.version == kept[-1].sha256


async def test_a_material_change_asks_each_signer_once_and_only_current_signatures_count(
    console_harness: ConsoleHarness, database: Database, settings: Settings, tmp_path: Path
) -> None:
    setup(database, settings)
    async with console_harness as h:
        await h.send("in #members", "as uk-alton", "!sign", "as au-andrews", "!sign")
        assert counted(database) == ["au-andrews", "uk-alton"]
        update(database, settings, CHANGED)
        out = await h.send()
        # Each signer: one direct message with the change as a word diff and how to re-confirm.
        for user in ("uk-alton", "au-andrews"):
            (message,) = dms(out, user)
            assert "[-giving-]{+handing+} a green light" in message
            assert f"!sign {SLUG}" in message and "version 2" in message
        assert dms(out, "au-abetz") == [] and dms(out, "coordinator") == []
        assert counted(database) == []  # given to version 1: they no longer count
        # The post shows the new text and a line saying it changed.
        (edited,) = re.findall(rf"^\[#members\] \[edited post\] (.*?)(?={NEXT})", out, re.M | re.S)
        assert "handing a green light" in edited and OLD_WORDS not in edited
        assert "Text changed" in edited and "version 2" in edited

        member = await h.send("as uk-alton", f"!status {SLUG}")
        assert "re-confirm it with" in member and "You signed on" not in member
        coordinator = await h.send("as coordinator", f"!status {SLUG}")
        assert "Must re-confirm" in coordinator and "(2): " in coordinator
        assert "Lord (David) Alton (United Kingdom)" in coordinator
        as_json = status_json(database, settings, tmp_path)
        assert as_json["version"] == 2 and as_json["signatures"] == 0
        assert as_json["awaiting_reconfirmation"] == ["au-andrews", "uk-alton"]

        again = await h.send("as uk-alton", "!sign")
        (reply,) = replies(again, "uk-alton")
        assert reply.startswith("✅ You re-confirmed your signature"), reply
        assert counted(database) == ["uk-alton"]
        twice = await h.send("!sign")
        assert replies(twice, "uk-alton")[0].startswith("You already signed"), twice

        as_json = status_json(database, settings, tmp_path)
        assert as_json["signatures"] == 1 and as_json["awaiting_reconfirmation"] == ["au-andrews"]
        closed = await h.send("as coordinator", f"!cosign close {SLUG}")
        note = "".join(re.findall(r"^\[#secretariat\] (.*)$", closed, re.MULTILINE))
        assert "never re-confirmed" in note and "Kevin Andrews MP (Australia)" in note
        assert "Alton" not in note
        late = await h.send("as au-andrews", f"!sign {SLUG}")
        assert "closed" in replies(late, "au-andrews")[0] and "re-confirmed" not in late
    with database.session() as session:
        letter = letters.get_letter(session, slug=SLUG)
        assert letter is not None and letter.id is not None
        compilation = letters.get_compilation(session, letter_pk=letter.id)
        assert compilation is not None and compilation.signatory_count == 1
        txt = compilation.outputs["txt"]
        assert "Lord (David) Alton (United Kingdom)" in txt and "Kevin Andrews MP" not in txt
        assert "handing a green light" in compilation.outputs["txt"]
    (reconfirmed,) = events(database, "signature.reconfirmed")
    (added,) = [e for e in events(database, "signature.added") if e["member_id"] == "uk-alton"]
    assert reconfirmed["from_version"] == 1 and reconfirmed["version"] == 2
    assert reconfirmed["signed_at"] is not None and reconfirmed["by"] == "member"
    (changed,) = events(database, "letter.updated")
    assert changed["change"] == "material" and changed["version"] == 2
    assert changed["from_sha256"] == added["text_sha256"] != changed["sha256"]
    assert changed["awaiting_reconfirmation"] == 2


async def test_re_confirming_keeps_the_first_signing_time(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    setup(database, settings)
    async with console_harness as h:
        await h.send("in #members", "as uk-alton", "!sign")
        first = _signature(database, "uk-alton")
        update(database, settings, CHANGED)
        await h.send("!sign")
        now = _signature(database, "uk-alton")
    assert now.id == first.id and now.signed_at == first.signed_at
    assert now.version_number == 2 and not now.awaiting_reconfirmation
    assert events(database, "signature.reconfirmed")[0]["signed_at"] == first.signed_at.isoformat()


def _signature(database: Database, member_id: str) -> Signature:
    with database.session() as session:
        letter = letters.get_letter(session, slug=SLUG)
        member = members.get_member(session, member_id=member_id)
        assert letter is not None and member is not None
        (signature,) = session.exec(
            select(Signature).where(
                Signature.letter_pk == letter.id,
                Signature.member_pk == member.id,
                col(Signature.withdrawn_at).is_(None),
            )
        ).all()
        return signature


async def test_staff_are_asked_and_re_confirm_for_their_member(
    console_harness: ConsoleHarness, database: Database, settings: Settings
) -> None:
    setup(database, settings)
    async with console_harness as h:
        await h.send("in #members", "as abetz-office", "!sign for au-abetz")
        assert counted(database) == ["au-abetz"]
        update(database, settings, CHANGED)
        out = await h.send()
        (message,) = dms(out, "abetz-office")
        assert "you gave for Senator Eric Abetz" in message
        assert f"!sign {SLUG} for au-abetz" in message
        assert dms(out, "au-abetz") == []
        assert counted(database) == []
        again = await h.send("as abetz-office", f"!sign {SLUG} for au-abetz")
        (reply,) = replies(again, "abetz-office")
        assert reply.startswith("✅ You re-confirmed Senator Eric Abetz's signature"), reply
        assert counted(database) == ["au-abetz"]
    (event,) = events(database, "signature.reconfirmed")
    assert event["by"] == "staff" and event["staff"] == "abetz-office"


async def test_a_restart_between_the_update_and_the_messages_sends_each_once(
    database: Database, settings: Settings
) -> None:
    setup(database, settings)
    async with ConsoleHarness(settings, database) as h:
        await h.send("in #members", "as uk-alton", "!sign", "as au-andrews", "!sign")
    update(database, settings, CHANGED)  # while no bot runs
    outputs = []
    for _ in range(2):
        async with ConsoleHarness(settings, database) as h:
            outputs.append(await h.send())
    for user in ("uk-alton", "au-andrews"):
        assert len(dms(outputs[0], user)) == 1, outputs[0]
        assert dms(outputs[1], user) == [], outputs[1]


async def test_a_minor_change_moves_signatures_and_tells_the_channels(
    console_harness: ConsoleHarness, database: Database, settings: Settings, tmp_path: Path
) -> None:
    setup(database, settings)
    async with console_harness as h:
        await h.send("in #members", "as uk-alton", "!sign", "as au-andrews", "!sign")
        update(database, settings, TYPO, minor=True)
        out = await h.send()
        assert not re.search(r"^\[dm @", out, re.MULTILINE), out
        notice = "".join(re.findall(rf"^\[#members\] (✏️.*?)(?={NEXT})", out, re.M | re.S))
        assert "a minor change" in notice and "{+We,+}" in notice and "[-We-]" in notice
        assert counted(database) == ["au-andrews", "uk-alton"]
    as_json = status_json(database, settings, tmp_path)
    assert as_json["version"] == 2 and as_json["signatures"] == 2
    assert as_json["awaiting_reconfirmation"] == []
    assert {_signature(database, m).version_number for m in ("uk-alton", "au-andrews")} == {2}
    (changed,) = events(database, "letter.updated")
    assert changed["change"] == "minor" and changed["moved"] == 2


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    return Cli(tmp_path, db_url)


def test_letter_update_and_diff_on_the_command_line(cli: Cli, tmp_path: Path) -> None:
    cli.seed()  # every member signed version 1
    changed = tmp_path / "changed.md"
    changed.write_text(CHANGED, encoding="utf-8")
    out = cli("letter", "update", str(changed)).stdout
    assert "version 2" in out and "a material change" in out and "re-confirmed" in out
    diff = cli("letter", "diff", SLUG).stdout
    assert diff.startswith(f"{SLUG}: version 1 (") and "→ version 2 (" in diff
    assert "[-giving-]{+handing+} a green light" in diff
    assert cli("letter", "diff", SLUG, "--from", "1", "--to", "2").stdout == diff
    reverse = cli("letter", "diff", SLUG, "--from", "2", "--to", "1").stdout
    assert "[-handing-]{+giving+} a green light" in reverse
    status = json.loads(cli("status", SLUG, "--json").stdout)
    assert status["version"] == 2 and status["signatures"] == 0
    assert len(status["awaiting_reconfirmation"]) > 10
    show = cli("letter", "show", SLUG).stdout
    assert re.search(r"^version:\s+2 \([0-9a-f]{64}\)$", show, re.MULTILINE), show


def test_refusals_change_nothing(cli: Cli, tmp_path: Path) -> None:
    cli.seed()
    same = tmp_path / "same.md"
    same.write_text(ORIGINAL, encoding="utf-8")
    refused = cli("letter", "update", str(same), code=1).stderr.strip()
    assert refused.startswith("cosign: nothing changed") and "\n" not in refused
    other = tmp_path / "other.md"
    other.write_text(CHANGED.replace(f'slug = "{SLUG}"', 'slug = "no-such-letter"'), "utf-8")
    assert "no-such-letter" in CHANGED.replace(f'slug = "{SLUG}"', 'slug = "no-such-letter"')
    refused = cli("letter", "update", str(other), code=1).stderr.strip()
    assert "no-such-letter" in refused and "\n" not in refused
    only = cli("letter", "diff", SLUG, code=1).stderr.strip()
    assert "has version 1" in only and "not changed" in only
    changed = tmp_path / "changed.md"
    changed.write_text(CHANGED, encoding="utf-8")
    cli("letter", "update", str(changed))
    for args in (["--from", "0"], ["--to", "3"], ["--from", "2", "--to", "2"]):
        refused = cli("letter", "diff", SLUG, *args, code=1).stderr.strip()
        assert refused.startswith("cosign: ") and "\n" not in refused, args
    status = json.loads(cli("status", SLUG, "--json").stdout)
    assert status["version"] == 2
    cli("letter", "close", SLUG)
    typo = tmp_path / "typo.md"
    typo.write_text(CHANGED.replace("We", "We,", 1), encoding="utf-8")
    refused = cli("letter", "update", str(typo), "--minor", code=1).stderr.strip()
    assert "is closed" in refused
    assert json.loads(cli("status", SLUG, "--json").stdout)["version"] == 2
    assert cli("audit", SLUG, "--verify").exit_code == 0


def test_a_draft_update_is_a_new_version_without_asking_anyone(
    database: Database, settings: Settings
) -> None:
    with database.session() as session:
        import_roster(session, data=ROSTER, actor="test")
    create_example_letter(database, settings)
    update(database, settings, CHANGED)
    with database.session() as session:
        letter = letters.get_letter(session, slug=SLUG)
        assert letter is not None and letter.id is not None
        assert letter.version_number == 2
        assert len(session.exec(select(LetterVersion)).all()) == 2
    (changed,) = events(database, "letter.updated")
    assert "change" not in changed  # a draft has no signatures to lapse or move


def test_identical_text_is_refused_in_the_store_too(
    database: Database, settings: Settings
) -> None:
    setup(database, settings)
    with pytest.raises(VersionError, match="nothing changed"):
        update(database, settings, ORIGINAL)
    with database.session() as session:
        letter = letters.get_letter(session, slug=SLUG)
        assert letter is not None and letter.version_number == 1


# --- the diff ----------------------------------------------------------------------------------


words = st.lists(st.sampled_from(["a", "b", "c", "dé", "ü", "\n", "  ", "x."]), max_size=30)


@given(words, words)
def test_a_word_diff_holds_both_texts(old: list[str], new: list[str]) -> None:
    a, b = " ".join(old), " ".join(new)
    pieces = word_diff(a, b)
    assert "".join(t for tag, t in pieces if tag != "+") == a
    assert "".join(t for tag, t in pieces if tag != "-") == b
    kept = [p for p in condensed(pieces) if p[0] in "+-"]
    assert kept == [p for p in pieces if p[0] in "+-"]  # condensing never drops a change


def test_a_condensed_diff_shows_the_change_in_its_sentence() -> None:
    old = " ".join(f"w{i}" for i in range(100))
    new = old.replace("w50", "CHANGED")
    text = plain(condensed(word_diff(old, new)))
    before = " ".join(f"w{i}" for i in range(42, 50))
    after = " ".join(f"w{i}" for i in range(51, 59))
    assert text == f"… {before} [-w50-]{{+CHANGED+}} {after} …"
