"""One compile from a fresh process, for bench/compile.py (run as a subprocess, once per sample).

    python bench/_fresh_compile.py compile|close DATABASE_URL SLUG
    python bench/_fresh_compile.py pdf DATABASE_URL SLUG COUNT

Imports first (not timed), then times everything a fresh `cosign` process does to compile:
opening the database, building the UCA collator, loading the letter and its signatories, and
either rendering txt+md+html (`compile`, with bot.compile.render_formats, one grouping for the
three) or the whole close path (`close`: bot.store.letters.close_letter, all five formats, the
compilation row and the audit event, in a transaction that is rolled back), or the PDF of COUNT of
the letter's signatories (`pdf`: every n-th, so all groups stay; the fonts' coverage read, the
name check, Typst's layout; then the DOCX, timed apart). The templates are
loaded and compiled on first use, so that is timed too. Prints one JSON object on stdout:
seconds for each step and in total, the signatory count and the output sizes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlmodel import Session  # noqa: E402

from bot import names  # noqa: E402
from bot.compile import LETTER_FILES, render_formats  # noqa: E402
from bot.db import Database  # noqa: E402
from bot.models._types import utcnow  # noqa: E402
from bot.store import letters, signatures  # noqa: E402


def compile_three(url: str, slug: str) -> dict[str, object]:
    started = time.perf_counter()
    database = Database(url)
    opened = time.perf_counter()
    names.collator()
    built = time.perf_counter()
    with database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        assert letter is not None and letter.id is not None, slug
        text = letters.letter_text(letter)
        people = signatures.signatories(session, letter_pk=letter.id)
    loaded = time.perf_counter()
    outputs = render_formats(text, people, LETTER_FILES)
    done = time.perf_counter()
    database.dispose()
    return {
        "total": done - started,
        "open": opened - started,
        "collator": built - opened,
        "load": loaded - built,
        "render": done - loaded,
        "count": len(people),
        "sizes": {fmt: len(body) for fmt, body in outputs.items()},
    }


def close(url: str, slug: str) -> dict[str, object]:
    started = time.perf_counter()
    database = Database(url)
    opened = time.perf_counter()
    names.collator()
    built = time.perf_counter()
    with Session(database.engine, expire_on_commit=False) as session:
        letter = letters.get_letter(session, slug=slug)
        assert letter is not None, slug
        compilation = letters.close_letter(session, letter=letter, actor="bench", at=utcnow())
        assert compilation is not None, "the letter was not open"
        done = time.perf_counter()
        count = compilation.signatory_count
        sizes = {fmt: len(body) for fmt, body in compilation.outputs.items()}
        session.rollback()
    database.dispose()
    return {
        "total": done - started,
        "open": opened - started,
        "collator": built - opened,
        "close": done - built,
        "count": count,
        "sizes": sizes,
    }


def pdf(url: str, slug: str, count: int) -> dict[str, object]:
    from bot.compile import render_document, signatory_lines
    from bot.fonts import unprintable
    from bot.names import group_signatories
    from bot.pdf import PrintOptions

    started = time.perf_counter()
    database = Database(url)
    names.collator()
    with database.session() as session:
        letter = letters.get_letter(session, slug=slug)
        assert letter is not None and letter.id is not None, slug
        text = letters.letter_text(letter)
        people = signatures.signatories(session, letter_pk=letter.id)
    step = max(1, len(people) // count)
    people = people[::step][:count]
    groups = group_signatories(people)
    lines = signatory_lines(groups)
    loaded = time.perf_counter()
    options = PrintOptions()
    warned = unprintable(groups, options.font_set())
    checked = time.perf_counter()
    data = render_document(text, lines, "pdf", options=options, at=utcnow())
    done = time.perf_counter()
    document = render_document(text, lines, "docx", options=options, at=utcnow())
    docx_done = time.perf_counter()
    database.dispose()
    return {
        "total": done - started,
        "load": loaded - started,
        "fonts": checked - loaded,
        "typeset": done - checked,
        "docx": docx_done - done,
        "count": len(people),
        "warned": len(warned),
        "sizes": {"pdf": len(data), "docx": len(document)},
    }


def main() -> None:
    mode, url, slug = sys.argv[1:4]
    if mode == "pdf":
        result = pdf(url, slug, int(sys.argv[4]))
    else:
        result = compile_three(url, slug) if mode == "compile" else close(url, slug)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
