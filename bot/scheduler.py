"""The deadline scheduler: closes due letters once, sends reminders once, writes the files,
queues the copies of published letters once.

Safe to run in several processes at once: closing goes through one conditional UPDATE, reminders
through a unique row per (letter, offset, deadline), outbox rows through unique keys, copies
through one LetterCopies row per letter (bot.copies).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from bot import copies
from bot.campaign import (
    close_and_announce,
    enqueue_dm_reminders,
    enqueue_reminder,
    publish_letter,
)
from bot.models import Letter, LetterState
from bot.models._types import utcnow
from bot.receipts import receipt_json
from bot.store import letters

if TYPE_CHECKING:
    from bot.runtime import Bot

log = logging.getLogger(__name__)

OUTPUT_FILES = {
    "txt": "letter.txt",
    "md": "letter.md",
    "html": "letter.html",
    "csv": "signatories.csv",
    "pdf": "letter.pdf",
    "docx": "letter.docx",
}
RECEIPT_FILE = "receipt.json"


class Scheduler:
    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def run(self) -> None:
        """Tick until cancelled; the first tick runs at once (catch-up after downtime)."""
        while True:
            try:
                changed = await asyncio.to_thread(self.tick)
                if changed:
                    self.bot.deliverer.notify()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler tick failed; carrying on")
            await asyncio.sleep(self.bot.settings.scheduler.tick_seconds)

    def tick(self, now: datetime | None = None) -> bool:
        now = now or utcnow()
        changed = self.close_due(now)
        changed |= self.publish_due(now)
        changed |= self.send_reminders(now)
        self.write_files()
        changed |= self.queue_copies(now)
        return changed

    def close_due(self, now: datetime) -> bool:
        with self.bot.database.session() as session:
            due = [letter.slug for letter in letters.due_letters(session, now=now)]
        closed_any = False
        for slug in due:
            with self.bot.database.session() as session:
                letter = letters.get_letter(session, slug=slug)
                if letter is None or letter.state != LetterState.open.value:
                    continue
                compilation = close_and_announce(
                    session, settings=self.bot.settings, letter=letter, actor="scheduler", now=now
                )
            if compilation is not None:
                closed_any = True
                log.info(
                    "closed %s at its deadline with %d signatures",
                    slug,
                    compilation.signatory_count,
                )
        return closed_any

    def publish_due(self, now: datetime) -> bool:
        """Names of embargoed letters go to their channels when the embargo ends, once (the
        conditional UPDATE in publish_letter decides between replicas)."""
        with self.bot.database.session() as session:
            due = [letter.slug for letter in letters.due_publications(session, now=now)]
        published_any = False
        for slug in due:
            with self.bot.database.session() as session:
                letter = letters.get_letter(session, slug=slug)
                if letter is None or letter.published_at is not None:
                    continue
                published = publish_letter(
                    session, settings=self.bot.settings, letter=letter, actor="scheduler", now=now
                )
            if published:
                published_any = True
                log.info("published %s at the end of its embargo", slug)
        return published_any

    def queue_copies(self, now: datetime) -> bool:
        """The published PDF to each signatory by direct message (DESIGN.md §10), queued here
        rather than at close or publication: thousands of rows must not slow those down. After
        write_files, so the console's copy names a file that exists. Errors are logged, never
        raised: the tick's other work does not depend on it."""
        try:
            queued = copies.queue_copies(self.bot.database, settings=self.bot.settings, now=now)
        except Exception:
            log.exception("queuing copies of published letters failed; the next tick retries")
            return False
        return queued > 0

    def send_reminders(self, now: datetime) -> bool:
        offsets = self.bot.settings.scheduler.reminder_offsets
        if not offsets:
            return False
        with self.bot.database.session() as session:
            slugs = [
                letter.slug
                for letter in letters.list_letters(session, state="open")
                if letter.deadline > now
            ]
        sent_any = False
        for slug in slugs:
            with self.bot.database.session() as session:
                letter = letters.get_letter(session, slug=slug)
                if letter is None or letter.state != LetterState.open.value:
                    continue
                sent_any |= self._remind(session, letter, now)
        return sent_any

    def _remind(self, session: Session, letter: Letter, now: datetime) -> bool:
        due = [
            label
            for label, offset in self.bot.settings.scheduler.reminder_offsets
            if letter.deadline - offset <= now
        ]
        if not due:
            return False
        # Offsets come largest first: only the latest due one is sent; earlier ones it overtook
        # (the bot was down) are skipped rather than sent in a burst.
        *overtaken, latest = due
        for label in overtaken:
            letters.record_reminder(
                session, letter=letter, offset_label=label, status="skipped", at=now
            )
        if (
            letters.record_reminder(
                session, letter=letter, offset_label=latest, status="sent", at=now
            )
            is None
        ):
            return False
        enqueue_reminder(session, letter=letter, label=latest, now=now)
        if self.bot.settings.scheduler.dm_reminders:
            dms = enqueue_dm_reminders(session, letter=letter, label=latest, now=now)
            log.info("reminder %s queued for %s (%d by direct message)", latest, letter.slug, dms)
        else:
            log.info("reminder %s queued for %s", latest, letter.slug)
        return True

    def write_files(self) -> None:
        with self.bot.database.session() as session:
            pending = list(letters.compilations_without_files(session))
        for compilation in pending:
            with self.bot.database.session() as session:
                letter = session.get(Letter, compilation.letter_pk)
                assert letter is not None
                assert compilation.id is not None
                files = letters.compiled_files(session, compilation_pk=compilation.id)
                write_outputs(
                    self.bot.settings.letters.output_dir / letter.slug,
                    {**compilation.outputs, **files},
                    receipt=compilation.receipt,
                )
                row = letters.get_compilation(session, letter_pk=compilation.letter_pk)
                if row is not None:
                    row.files_written_at = utcnow()
                    session.add(row)
            log.info("wrote %s", self.bot.settings.letters.output_dir / letter.slug)


def write_outputs(
    directory: Path, outputs: Mapping[str, str | bytes], *, receipt: Mapping[str, Any] | None = None
) -> None:
    """Write each file atomically (temp file + rename): a reader never sees half a letter.

    Text outputs as UTF-8, pdf and docx as the stored bytes, and receipt.json when there is a
    receipt (compilations made before receipts existed have none).
    """
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    for fmt, filename in OUTPUT_FILES.items():
        body = outputs.get(fmt)
        if body is not None:
            files[filename] = body.encode("utf-8") if isinstance(body, str) else body
    if receipt is not None:
        files[RECEIPT_FILE] = receipt_json(receipt).encode("utf-8")
    for filename, data in files.items():
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{filename}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, directory / filename)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
