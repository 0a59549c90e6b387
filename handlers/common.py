"""Helpers the handlers share: finding the letter a command is about, and refusing politely."""

from __future__ import annotations

from bot.campaign import CampaignError, require_letter
from bot.core import CommandError, Context
from bot.models import Letter, LetterState
from bot.store import letters
from bot.timeutil import format_utc

# The slash commands cosign declares in its Slack manifest. Slack reserves some names for itself
# (`/status` among them) and rejects a manifest that declares one, so every other command is typed
# on Slack after `/cosign` (`/cosign status`); see bot/platforms/slack/manifest.py.
SLACK_SLASH_COMMANDS = ("sign", "unsign", "letters", "cosign")


def prefix_for(platform: str) -> str:
    return "/" if platform == "slack" else "!"


def typed(platform: str, usage: str) -> str:
    """How a user types a command: `/cosign status [SLUG]` on Slack, `!status [SLUG]` elsewhere."""
    word = usage.split(" ", 1)[0]
    if platform == "slack" and word not in SLACK_SLASH_COMMANDS:
        return f"/cosign {usage}"
    return f"{prefix_for(platform)}{usage}"


def resolve_letter(ctx: Context, args: list[str], *, max_args: int = 1) -> Letter:
    """SLUG if given; else the one open letter in this channel, or the letter this replies to."""
    if len(args) > max_args:
        raise ctx.usage()
    if args:
        unknown = CommandError(f"There is no letter called {args[0]!r}. Try letters.")
        try:
            letter = require_letter(ctx.session, args[0].lower())
        except CampaignError as exc:
            raise unknown from exc
        if letter.state == LetterState.draft.value and not ctx.is_coordinator:
            raise unknown  # drafts are for coordinators: not even their title or deadline
        return letter
    inv = ctx.invocation
    if inv.thread:
        replied_to = letters.letter_for_message(
            ctx.session, platform=inv.platform, message_id=inv.thread
        )
        if replied_to is not None:
            return replied_to
    candidates = letters.open_letters_in_channel(
        ctx.session, platform=inv.platform, channel=inv.channel
    )
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        example = typed(inv.platform, _verb(ctx))
        raise CommandError(f"No letter is open in this channel: name it, e.g. {example} SLUG.")
    slugs = ", ".join(sorted(letter.slug for letter in candidates))
    raise CommandError(f"Several letters are open here ({slugs}): name the one you mean.")


def _verb(ctx: Context) -> str:
    """The command's words without its arguments: `status`, `cosign post`."""
    usage = ctx.command.usage if ctx.command else "sign"
    words = []
    for word in usage.split():
        if not word.isalpha() or not word.islower():
            break
        words.append(word)
    return " ".join(words) or "sign"


def require_signable(ctx: Context, letter: Letter, verb: str) -> None:
    """Rule 4: nothing after the deadline, whether or not the scheduler has closed it yet.

    The state is read under the letter's row lock, held until the command commits: a close
    either waits for this signature (and compiles it) or has committed first (and we refuse).
    """
    letters.lock_letter(ctx.session, letter=letter)
    if letter.state == LetterState.draft.value:
        raise CommandError(f"“{letter.title}” is not open for signing yet.")
    if letter.state == LetterState.closed.value or letter.deadline <= ctx.now:
        closed = (
            letter.closed_at
            if letter.closed_at and letter.closed_at < letter.deadline
            else (letter.deadline)
        )
        raise CommandError(
            f"Signing “{letter.title}” closed at {format_utc(closed)}; it is too late to {verb}."
        )
