"""Receipts, anchors and `cosign verify` (DESIGN.md §10): the published record can be checked,
and cutting the audit chain's tail or rewriting it is noticed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from record_support import SLUG, Cli
from sqlalchemy import create_engine, text
from sqlmodel import select

from bot.db import Database
from bot.models import AuditEvent, Compilation, CompiledFile
from bot.scheduler import Scheduler
from bot.store.audit import GENESIS, event_hash


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    return Cli(tmp_path, db_url)


def closed(cli: Cli) -> dict[str, object]:
    """The seed letter signed and closed; its stored receipt."""
    cli.seed()
    cli("letter", "close", SLUG)
    database = Database(cli.db_url)
    try:
        with database.session() as session:
            receipt = session.exec(select(Compilation)).one().receipt
    finally:
        database.dispose()
    assert isinstance(receipt, dict)
    return receipt


def sql(cli: Cli, statement: str, **params: object) -> None:
    engine = create_engine(cli.db_url)
    with engine.begin() as conn:
        conn.execute(text(statement), params)
    engine.dispose()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_close_stores_a_receipt_and_writes_every_file(cli: Cli, tmp_path: Path) -> None:
    from conftest import make_settings

    from bot.runtime import Bot

    receipt = closed(cli)
    database = Database(cli.db_url)
    try:
        with database.session() as session:
            compilation = session.exec(select(Compilation)).one()
            files = {f.format: bytes(f.data) for f in session.exec(select(CompiledFile)).all()}
            event = session.exec(
                select(AuditEvent).where(AuditEvent.action == "letter.closed")
            ).one()
            last = session.exec(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()  # type: ignore[attr-defined]
            assert (receipt["audit_head"], last) == ({"seq": event.seq, "hash": event.hash}, event)
            assert event.detail["sha256"] == receipt["outputs"] == compilation.sha256
        assert set(files) == {"pdf", "docx"}
        assert receipt["slug"] == SLUG and receipt["signatories"] == 47
        assert set(receipt["outputs"]) == {"txt", "md", "html", "csv", "json", "pdf", "docx"}  # type: ignore[arg-type]
        assert len(str(receipt["text_sha256"])) == 64 and receipt["version"]
        assert str(receipt["compiled_at"]).endswith("Z") or "+00:00" in str(receipt["compiled_at"])
        # The scheduler's file pass writes them all, receipt.json included (also after a restart:
        # it writes whatever compilation has no files yet).
        settings = make_settings(cli.db_url, tmp_path)
        Scheduler(Bot(settings, database, {})).write_files()
    finally:
        database.dispose()
    out = tmp_path / "out" / SLUG
    written = {path.name for path in out.iterdir()}
    assert {"letter.txt", "letter.pdf", "letter.docx", "receipt.json"} <= written
    assert (out / "letter.pdf").read_bytes() == files["pdf"]
    on_disk = json.loads((out / "receipt.json").read_text(encoding="utf-8"))
    assert on_disk == receipt
    for name, fmt in (("letter.pdf", "pdf"), ("letter.docx", "docx"), ("letter.txt", "txt")):
        assert sha((out / name).read_bytes()) == on_disk["outputs"][fmt]
    ok = cli("audit", "--verify")
    head = receipt["audit_head"]
    assert f"head {head['seq']}:{head['hash']}" in ok.stdout  # type: ignore[index]


def test_deleting_the_newest_audit_events_is_caught_by_the_receipt(cli: Cli) -> None:
    receipt = closed(cli)
    head = receipt["audit_head"]["seq"]  # type: ignore[index]
    assert "intact" in cli("audit", "--verify").stdout
    # Cut the tail: the close event and the one before it. What is left still links up.
    sql(cli, "DELETE FROM auditevent WHERE seq >= :seq", seq=head - 1)
    broken = cli("audit", "--verify", code=1)
    assert f"receipt of {SLUG}" in broken.stderr
    assert f"audit event {head}" in broken.stderr and "deleted" in broken.stderr


def test_rewriting_the_chain_and_rehashing_it_is_caught_by_the_receipt(cli: Cli) -> None:
    receipt = closed(cli)
    database = Database(cli.db_url)
    try:
        with database.session() as session:
            events = session.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()  # type: ignore[arg-type]
            # A forger edits one old event and recomputes every hash after it: the chain links.
            prev = GENESIS
            for event in events:
                if event.action == "letter.created":
                    event.actor = "someone-else"  # who created the letter, rewritten
                event.prev_hash = prev
                event.hash = event_hash(
                    prev_hash=prev,
                    seq=event.seq,
                    at=event.at,
                    actor=event.actor,
                    action=event.action,
                    letter_slug=event.letter_slug,
                    member_id=event.member_id,
                    detail=event.detail,
                )
                prev = event.hash
                session.add(event)
    finally:
        database.dispose()
    broken = cli("audit", "--verify", code=1)
    head = receipt["audit_head"]
    assert f"receipt of {SLUG}" in broken.stderr and "rewritten" in broken.stderr
    assert f"audit event {head['seq']}" in broken.stderr  # type: ignore[index]
    # Only the receipt noticed: the chain itself links up.
    assert "prev_hash" not in broken.stderr and "content" not in broken.stderr


def test_anchor_good_bad_and_malformed(cli: Cli) -> None:
    receipt = closed(cli)
    head = receipt["audit_head"]
    seq, digest = head["seq"], head["hash"]  # type: ignore[index]
    assert "intact" in cli("audit", "--verify", "--anchor", f"{seq}:{digest}").stdout
    assert "intact" in cli("audit", "--anchor", f"{seq}:{digest[:16]}").stdout  # as chat shows it
    assert "intact" in cli("audit", SLUG, "--anchor", f"{seq - 3}:{_hash_at(cli, seq - 3)}").stdout
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    for anchor in (f"{seq}:{wrong}", f"{seq + 50}:{digest}"):
        refused = cli("audit", "--verify", "--anchor", anchor, code=1)
        assert "not in the chain" in refused.stderr and anchor in refused.stderr
    for malformed in (
        "",
        "12",
        "abc:def",
        f"{seq}:{digest[:8]}",
        f"-1:{digest}",
        f"{seq}:{'z' * 64}",
    ):
        refused = cli("audit", "--verify", "--anchor", malformed, code=1)
        assert len(refused.stderr.strip().splitlines()) == 1 and "SEQ:HASH" in refused.stderr
    # A tail cut after the anchor was copied from chat: the anchor notices it.
    sql(cli, "DELETE FROM auditevent WHERE seq >= :seq", seq=seq)
    sql(cli, "UPDATE compilation SET receipt = NULL")  # and the forger dropped the receipt too
    refused = cli("audit", "--anchor", f"{seq}:{digest}", code=1)
    assert "not in the chain" in refused.stderr


def _hash_at(cli: Cli, seq: int) -> str:
    engine = create_engine(cli.db_url)
    with engine.connect() as conn:
        value = conn.execute(
            text("SELECT hash FROM auditevent WHERE seq = :s"), {"s": seq}
        ).scalar()
    engine.dispose()
    return str(value)


def test_audit_without_slug_or_verify_is_a_usage_error(cli: Cli) -> None:
    assert "SLUG" in cli("audit", code=2).stderr


def test_verify_file_good_modified_unrelated_and_missing(cli: Cli, tmp_path: Path) -> None:
    closed(cli)
    for fmt in ("pdf", "docx", "txt", "html"):
        out = tmp_path / f"letter.{fmt}"
        cli("compile", SLUG, "--format", fmt, "--out", str(out))
        ok = cli("verify", str(out))
        assert f"the {fmt} of {SLUG}" in ok.stdout and "byte-identical" in ok.stdout
        assert "version" in ok.stdout and "compiled" in ok.stdout
    pdf = (tmp_path / "letter.pdf").read_bytes()
    modified = tmp_path / "modified.pdf"
    modified.write_bytes(pdf[:-20] + bytes(b ^ 1 for b in pdf[-20:]))
    unrelated = tmp_path / "unrelated.txt"
    unrelated.write_text("Subject: something else\n", encoding="utf-8")
    for path in (modified, unrelated):
        refused = cli("verify", str(path), code=1)
        assert len(refused.stderr.strip().splitlines()) == 1
        assert "not byte-identical to any compiled output" in refused.stderr
    missing = cli("verify", str(tmp_path / "nope.pdf"), code=1)
    assert len(missing.stderr.strip().splitlines()) == 1 and "cannot read" in missing.stderr


def test_a_preview_is_not_a_compiled_output(cli: Cli, tmp_path: Path) -> None:
    cli.seed()
    preview = tmp_path / "preview.txt"
    cli("compile", SLUG, "--format", "txt", "--out", str(preview))
    cli("verify", str(preview), code=1)


def test_a_compilation_from_before_pdf_still_compiles_pdf_from_its_stored_list(
    cli: Cli, tmp_path: Path
) -> None:
    """Closed before 0007: no stored pdf/docx and no receipt. compile makes them from the
    signatory list the compilation stored, and audit --verify has no receipt to check."""
    from record_support import golden_lines, pdf_lines

    closed(cli)
    sql(cli, "DELETE FROM compiledfile")
    sql(cli, "UPDATE compilation SET receipt = NULL, warnings = NULL")
    sql(cli, "DELETE FROM signature")  # the list comes from the compilation, not the signatures
    out = tmp_path / "old.pdf"
    cli("compile", SLUG, "--format", "pdf", "--out", str(out))
    lines = pdf_lines(out.read_bytes())
    assert [line for line in lines if line in set(golden_lines())] == golden_lines()
    assert "intact" in cli("audit", "--verify").stdout
