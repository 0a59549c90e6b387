"""cosign SUBCOMMAND: the coordinators' chat commands (post, close, extend, preview, link, …)."""

from __future__ import annotations

import re
from typing import Any

from bot import staff as proxy
from bot.campaign import (
    CampaignError,
    Target,
    close_and_announce,
    extend_letter,
    post_letter,
    publish_letter,
)
from bot.compile import render_letter
from bot.core import Command, CommandError, Context, Reply
from bot.models import Letter, Member
from bot.store import audit, letters, members, signatures
from bot.store.letters import letter_text
from bot.timeutil import BadTime, format_utc, iso_utc, parse_when
from handlers.common import prefix_for, resolve_letter, typed
from handlers.registry import COORDINATOR_ENTRY, REGISTRY, SUBCOMMANDS

_SLACK_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")


@REGISTRY.command(
    COORDINATOR_ENTRY,
    usage="cosign SUBCOMMAND … (cosign help)",
    template="replies/cosign_help.j2",
)
def cosign(ctx: Context, args: list[str]) -> dict[str, Any] | Reply:
    """Coordinator commands: post, close, extend, preview, link, pending, confirm, void.

    Everyone may also type an everyone-command after it (`cosign status`): on Slack that is how
    status and help are reached, since Slack reserves `/status` for itself.
    """
    name = args[0].lower() if args else ""
    everyday = REGISTRY.commands.get(name)
    if (
        everyday is not None
        and name != COORDINATOR_ENTRY
        and not everyday.coordinator_only
        and not (name in SUBCOMMANDS.commands and ctx.is_coordinator)
    ):
        return _delegate(ctx, everyday, args[1:])
    ctx.require_coordinator()
    if not args:
        return cosign_help(ctx, [])
    sub = SUBCOMMANDS.commands.get(name)
    if sub is None:
        raise CommandError(f"Unknown subcommand {args[0]!r}. Try cosign help.")
    return _delegate(ctx, sub, args[1:])


def _delegate(ctx: Context, command: Command, args: list[str]) -> Reply:
    ctx.command = command
    result = command.handler(ctx, args)
    if isinstance(result, Reply):
        return result
    return Reply(command.template, result, command.visibility)


def _run(action: Any) -> Any:
    try:
        return action()
    except CampaignError as exc:
        raise CommandError(str(exc)) from exc


@SUBCOMMANDS.command("post", usage="cosign post SLUG", template="replies/posted.j2")
def post(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Open a letter for signing and post it in this channel."""
    if len(args) != 1:
        raise ctx.usage()
    letter = resolve_letter(ctx, args)
    inv = ctx.invocation
    target = Target(inv.platform, inv.channel)
    queued = _run(
        lambda: post_letter(
            ctx.session,
            settings=ctx.settings,
            letter=letter,
            targets=[target],
            actor=ctx.actor,
            now=ctx.now,
        )
    )
    return {
        "title": letter.title,
        "slug": letter.slug,
        "already": not queued,
        "deadline": format_utc(letter.deadline),
    }


@SUBCOMMANDS.command("close", usage="cosign close SLUG", template="replies/closed_now.j2")
def close(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Close signing now and compile the letter."""
    if len(args) != 1:
        raise ctx.usage()
    letter = resolve_letter(ctx, args)
    compilation = _run(
        lambda: close_and_announce(
            ctx.session, settings=ctx.settings, letter=letter, actor=ctx.actor, now=ctx.now
        )
    )
    if compilation is None:
        raise CommandError(f"“{letter.title}” was already closed.")
    return {"title": letter.title, "count": compilation.signatory_count}


@SUBCOMMANDS.command(
    "extend",
    usage="cosign extend SLUG WHEN  (WHEN: ISO 8601 or +2h, +3d)",
    template="replies/extended.j2",
)
def extend(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Move a letter's deadline."""
    if len(args) != 2:
        raise ctx.usage()
    letter = resolve_letter(ctx, args[:1])
    try:
        deadline = parse_when(args[1], now=ctx.now, zone=ctx.settings.letters.zone)
    except BadTime as exc:
        raise CommandError(str(exc)) from exc
    _run(
        lambda: extend_letter(
            ctx.session,
            settings=ctx.settings,
            letter=letter,
            deadline=deadline,
            actor=ctx.actor,
            now=ctx.now,
        )
    )
    return {"title": letter.title, "deadline": format_utc(deadline)}


@SUBCOMMANDS.command(
    "publish", usage="cosign publish SLUG", template="replies/published_now.j2"
)
def publish(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Publish a closed letter's names now, before its embargo ends."""
    if len(args) != 1:
        raise ctx.usage()
    letter = resolve_letter(ctx, args)
    published = _run(
        lambda: publish_letter(
            ctx.session, settings=ctx.settings, letter=letter, actor=ctx.actor, now=ctx.now
        )
    )
    if not published:
        when = format_utc(letter.published_at) if letter.published_at else "its close"
        raise CommandError(f"“{letter.title}” was already published on {when}; nothing was sent.")
    assert letter.id is not None
    return {
        "title": letter.title,
        "channels": len(letters.posts_of(ctx.session, letter_pk=letter.id)),
    }


@SUBCOMMANDS.command("preview", usage="cosign preview SLUG", template="replies/preview.j2")
def preview(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Show the letter as it would compile now."""
    if len(args) != 1:
        raise ctx.usage()
    letter = resolve_letter(ctx, args)
    assert letter.id is not None
    people = signatures.signatories(ctx.session, letter_pk=letter.id)
    return {
        "text": render_letter(letter_text(letter), people, "txt"),
        "state": letter.state,
        "count": len(people),
    }


def _account(platform: str, raw: str) -> str:
    if platform == "slack":
        match = _SLACK_MENTION.fullmatch(raw)
        if match:
            return match.group(1)
    return raw


@SUBCOMMANDS.command("link", usage="cosign link USER MEMBER_ID", template="replies/linked.j2")
def link(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Link a chat account on this platform to a roster member."""
    if len(args) != 2:
        raise ctx.usage()
    platform = ctx.invocation.platform
    account = _account(platform, args[0])
    member = members.get_member(ctx.session, member_id=args[1])
    if member is None:
        raise CommandError(f"No roster member has member_id {args[1]!r}.")
    previous = members.get_identity(ctx.session, platform=platform, external_id=account)
    members.link_identity(
        ctx.session,
        platform=platform,
        external_id=account,
        member=member,
        linked_via="coordinator",
        linked_by=ctx.actor,
    )
    resolved = members.resolve_pending(ctx.session, platform=platform, external_id=account)
    audit.append(
        ctx.session,
        actor=ctx.actor,
        action="identity.linked",
        member_id=member.member_id,
        detail={
            "platform": platform,
            "account": account,
            "via": "coordinator",
            "replaced": previous is not None,
        },
    )
    return {
        "account": account,
        "name": member.rendered_name(),
        "group": member.group,
        "resolved": resolved,
        "prefix": prefix_for(platform),
    }


@SUBCOMMANDS.command("pending", usage="cosign pending", template="replies/pending.j2")
def pending(ctx: Context, args: list[str]) -> dict[str, Any]:
    """List unknown accounts that tried to sign, waiting to be linked."""
    if args:
        raise ctx.usage()
    rows = []
    for request in members.list_pending(ctx.session):
        letter = ctx.session.get(letters.Letter, request.letter_pk) if request.letter_pk else None
        rows.append(
            {
                "platform": request.platform,
                "user": request.external_id,
                "display_name": request.display_name,
                "channel": request.channel,
                "slug": letter.slug if letter else "",
                "at": iso_utc(request.at),
            }
        )
    return {"pending": rows, "prefix": prefix_for(ctx.invocation.platform)}


def _letter_and_member(ctx: Context, slug: str, member_id: str) -> tuple[Letter, Member]:
    letter = resolve_letter(ctx, [slug])
    member = members.get_member(ctx.session, member_id=member_id)
    if member is None:
        raise CommandError(f"No roster member has member_id {member_id!r}.")
    return letter, member


@SUBCOMMANDS.command(
    "confirm", usage="cosign confirm SLUG MEMBER_ID", template="replies/proxy_confirmed.j2"
)
def confirm(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Count a signature staff gave for a member that awaits the member (proxy mode confirm)."""
    if len(args) != 2:
        raise ctx.usage()
    letter, member = _letter_and_member(ctx, args[0], args[1])
    _, staff = _run(
        lambda: proxy.confirm_signature(
            ctx.session,
            settings=ctx.settings,
            letter=letter,
            member=member,
            actor=ctx.actor,
            now=ctx.now,
        )
    )
    return {
        "title": letter.title,
        "name": member.rendered_name(),
        "group": member.group,
        "signed_by": staff.rendered_name() if staff is not None else "their staff",
    }


@SUBCOMMANDS.command(
    "void", usage="cosign void SLUG MEMBER_ID REASON…", template="replies/voided.j2"
)
def void(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Remove a signature recorded in error (not a withdrawal); the member is told why."""
    if len(args) < 3:
        raise ctx.usage()
    letter, member = _letter_and_member(ctx, args[0], args[1])
    reason = " ".join(args[2:])
    staff = _run(
        lambda: proxy.void_signature(
            ctx.session,
            letter=letter,
            member=member,
            reason=reason,
            actor=ctx.actor,
            now=ctx.now,
        )
    )
    return {
        "title": letter.title,
        "name": member.rendered_name(),
        "group": member.group,
        "reason": " ".join(reason.split()),
        "staff": staff.rendered_name() if staff is not None else "",
    }


@SUBCOMMANDS.command("help", usage="cosign help", template="replies/cosign_help.j2")
def cosign_help(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Show the coordinator commands."""
    platform = ctx.invocation.platform
    return {
        "commands": [
            {"usage": typed(platform, c.usage), "help": c.help}
            for c in SUBCOMMANDS.commands.values()
        ],
    }
