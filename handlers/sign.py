"""sign and unsign: a member's own signature, recorded before it is acknowledged."""

from __future__ import annotations

from typing import Any

from bot.core import CommandError, Context, Reply
from bot.names import clean_platform_text
from bot.store import audit, members, signatures
from bot.timeutil import format_utc
from handlers.common import require_signable, resolve_letter
from handlers.registry import REGISTRY


def _name_of(ctx: Context) -> tuple[str, str]:
    member = ctx.member
    assert member is not None
    name = member.rendered_name()
    return name, member.group


@REGISTRY.command("sign", usage="sign [SLUG]", template="replies/signed.j2")
def sign(ctx: Context, args: list[str]) -> dict[str, Any] | Reply:
    """Sign a letter (the one open in this channel if you leave out SLUG)."""
    letter = resolve_letter(ctx, args)
    require_signable(ctx, letter, "sign")
    inv = ctx.invocation
    member = ctx.member
    if member is None:
        display_name = clean_platform_text(inv.display_name)  # anyone chooses it: no escapes
        members.add_pending(
            ctx.session,
            platform=inv.platform,
            external_id=inv.user,
            display_name=display_name,
            channel=inv.channel,
            letter_pk=letter.id,
        )
        audit.append(
            ctx.session,
            actor=ctx.actor,
            action="pending.recorded",
            letter_slug=letter.slug,
            detail={
                "platform": inv.platform,
                "account": inv.user,
                "display_name": display_name,
            },
        )
        return Reply("replies/unknown_account.j2", {"title": letter.title}, "private")
    outcome = signatures.sign(
        ctx.session,
        letter=letter,
        member=member,
        at=ctx.now,
        via_platform=inv.platform,
        via_external_id=inv.user,
        via_event_id=inv.event_id,
    )
    name, group = _name_of(ctx)
    if not outcome.created:
        return Reply(
            "replies/already_signed.j2",
            {
                "title": letter.title,
                "name": name,
                "group": group,
                "signed_at": format_utc(outcome.signature.signed_at),
                "via": outcome.signature.via_platform,
            },
            "private",
        )
    audit.append(
        ctx.session,
        actor=ctx.actor,
        action="signature.added",
        letter_slug=letter.slug,
        member_id=member.member_id,
        detail={
            "platform": inv.platform,
            "account": inv.user,
            "event": inv.event_id,
            "version": letter.version,
        },
    )
    return {
        "title": letter.title,
        "name": name,
        "group": group,
        "slug": letter.slug,
        "deadline": format_utc(letter.deadline),
    }


@REGISTRY.command("unsign", usage="unsign [SLUG]", template="replies/withdrawn.j2")
def unsign(ctx: Context, args: list[str]) -> dict[str, Any]:
    """Withdraw your signature before the deadline."""
    letter = resolve_letter(ctx, args)
    require_signable(ctx, letter, "withdraw")
    member = ctx.member
    if member is None:
        raise CommandError("This account is not linked to a roster member, so it has no signature.")
    withdrawn = signatures.withdraw(ctx.session, letter=letter, member=member, at=ctx.now)
    if withdrawn is None:
        raise CommandError(
            f"You have not signed “{letter.title}”, so there is nothing to withdraw."
        )
    audit.append(
        ctx.session,
        actor=ctx.actor,
        action="signature.withdrawn",
        letter_slug=letter.slug,
        member_id=member.member_id,
        detail={"platform": ctx.invocation.platform, "account": ctx.invocation.user},
    )
    return {"title": letter.title, "slug": letter.slug}
