"""letters: what is open for signing (and, for coordinators, what is drafted)."""

from __future__ import annotations

from typing import Any

from bot.core import Context
from bot.models import LetterState
from bot.store import letters as letter_store
from bot.timeutil import time_left
from handlers.registry import REGISTRY


@REGISTRY.command("letters", usage="letters", template="replies/letters.j2")
def list_letters(ctx: Context, args: list[str]) -> dict[str, Any]:
    """List the letters open for signing."""
    if args:
        raise ctx.usage()
    states = [LetterState.open.value]
    if ctx.is_coordinator:
        states.append(LetterState.draft.value)
    rows = [
        {
            "slug": letter.slug,
            "title": letter.title,
            "state": letter.state,
            "time_left": time_left(letter.deadline, ctx.now),
        }
        for letter in letter_store.list_letters(ctx.session)
        if letter.state in states
    ]
    return {"letters": rows}
