"""sign and unsign: a member's own signature, or one their staff give for them (DESIGN.md §8),
recorded before it is acknowledged."""

from __future__ import annotations

from typing import Any

from bot import staff as proxy
from bot.core import CommandError, Context, Reply
from bot.models import Letter, Member, Role
from bot.names import clean_platform_text
from bot.store import audit, members, signatures
from bot.timeutil import format_utc
from handlers.common import require_signable, resolve_letter, typed
from handlers.registry import REGISTRY


def _name_of(ctx: Context) -> tuple[str, str]:
    member = ctx.member
    assert member is not None
    name = member.rendered_name()
    return name, member.group


def _signing_detail(ctx: Context, letter: Letter) -> dict[str, Any]:
    """What a `signature.added` audit event records of the command, whoever signed."""
    inv = ctx.invocation
    return {
        "platform": inv.platform,
        "account": inv.user,
        "event": inv.event_id,
        "version": letter.version_number,
        "text_sha256": letter.version,
    }


def _split_for(ctx: Context, args: list[str]) -> tuple[list[str], str | None]:
    """`[SLUG] [for MEMBER_ID]` -> ([SLUG], MEMBER_ID or None); a stray `for` is a usage error."""
    if len(args) >= 2 and args[-2].lower() == "for":
        args, for_id = args[:-2], args[-1]
    else:
        for_id = None
    if any(word.lower() == "for" for word in args):
        raise ctx.usage()
    return args, for_id


def _principal(ctx: Context, caller: Member, for_id: str | None, verb: str) -> Member:
    """Whom the caller signs (or withdraws) for: themselves, or a member their staff role acts
    for. Acting for anyone else is refused."""
    if caller.role != Role.staff.value:
        if for_id is None or for_id == caller.member_id:
            return caller
        raise CommandError(
            f"You can only {verb} for yourself: staff {verb} for the members they act for. "
            f"Type {typed(ctx.invocation.platform, verb)} without “for”."
        )
    acting = proxy.acts_for(ctx.session, staff=caller)
    if not acting:
        raise CommandError(
            "You are staff, but the roster lists no active member you act for; "
            "ask a coordinator to fix your acts_for."
        )
    choices = ", ".join(f"{m.member_id} ({proxy.label(m)})" for m in acting)
    if for_id is None:
        if len(acting) == 1:
            return acting[0]
        usage = typed(ctx.invocation.platform, f"{verb} [SLUG] for MEMBER_ID")
        raise ctx.usage(f"{usage} (you act for: {choices})")
    for member in acting:
        if member.member_id == for_id or member.member_id.lower() == for_id.lower():
            return member
    raise CommandError(f"You do not act for {for_id!r}; you act for: {choices}.")


def _already(letter: Letter, principal: Member, signature: Any, signer: Member | None) -> Reply:
    return Reply(
        "replies/already_signed_for.j2",
        {
            "title": letter.title,
            "name": principal.rendered_name(),
            "group": principal.group,
            "signed_at": format_utc(signature.signed_at),
            "via": signature.via_platform,
            "signed_by": signer.rendered_name() if signer is not None else "",
            "awaiting": signature.awaiting_member,
        },
        "private",
    )


def _sign_for(ctx: Context, letter: Letter, staff: Member, principal: Member) -> Reply:
    """Staff sign for a member: counted at once (`direct`, the member is told), or awaiting the
    member's confirmation (`confirm`, the member is asked)."""
    inv = ctx.invocation
    mode = proxy.proxy_mode(letter, ctx.settings)
    awaiting = mode == proxy.CONFIRM
    outcome = signatures.sign(
        ctx.session,
        letter=letter,
        member=principal,
        at=ctx.now,
        via_platform=inv.platform,
        via_external_id=inv.user,
        via_event_id=inv.event_id,
        signed_by=staff,
        awaiting_member=awaiting,
    )
    if not outcome.created and outcome.signature.awaiting_reconfirmation:
        return _reconfirm(ctx, letter, principal, outcome.signature, staff=staff, awaiting=awaiting)
    if not outcome.created:
        signer = proxy.signer_of(ctx.session, outcome.signature)
        return _already(letter, principal, outcome.signature, signer)
    audit.append(
        ctx.session,
        actor=ctx.actor,
        action="signature.added",
        letter_slug=letter.slug,
        member_id=principal.member_id,
        detail={
            **_signing_detail(ctx, letter),
            "proxy": mode,
            "awaiting_member": awaiting,
            **proxy.proxy_detail(staff, principal),
        },
    )
    proxy.tell(
        ctx.session,
        letter=letter,
        to=principal,
        about=f"proxy-signed:{outcome.signature.id}",
        template="replies/dm_confirm_request.j2" if awaiting else "replies/dm_signed_for.j2",
        context={
            "staff": staff.rendered_name(),
            "name": principal.rendered_name(),
            "at": format_utc(ctx.now),
        },
    )
    return Reply(
        "replies/signed_for_awaiting.j2" if awaiting else "replies/signed_for.j2",
        {
            "title": letter.title,
            "name": principal.rendered_name(),
            "group": principal.group,
            "deadline": format_utc(letter.deadline),
        },
        "private",
    )


def _confirm_own(ctx: Context, letter: Letter, member: Member, signature: Any) -> Reply:
    """The member signs what their staff signed for them in `confirm` mode: it counts now."""
    signatures.confirm(ctx.session, signature=signature)
    signer = proxy.signer_of(ctx.session, signature)
    audit.append(
        ctx.session,
        actor=ctx.actor,
        action="signature.confirmed",
        letter_slug=letter.slug,
        member_id=member.member_id,
        detail={"by": "member", **proxy.proxy_detail(signer, member)},
    )
    return Reply(
        "replies/confirmed.j2",
        {
            "title": letter.title,
            "name": member.rendered_name(),
            "group": member.group,
            "signed_by": signer.rendered_name() if signer is not None else "your staff",
            "signed_at": format_utc(signature.signed_at),
            "deadline": format_utc(letter.deadline),
        },
        "private",
    )


def _reconfirm(
    ctx: Context,
    letter: Letter,
    principal: Member,
    signature: Any,
    *,
    staff: Member | None = None,
    awaiting: bool = False,
) -> Reply:
    """Sign again after a material change (DESIGN.md §9): the signature stands for the current
    text, keeping when it was first given. Staff re-confirm for their member as they would sign
    (in `confirm` mode it then awaits the member)."""
    signed_version, signed_at = signature.version_number, signature.signed_at
    if not signatures.reconfirm(
        ctx.session, signature=signature, letter=letter, signed_by=staff, awaiting_member=awaiting
    ):
        raise CommandError("That signature changed meanwhile; type the command again.")
    audit.append(
        ctx.session,
        actor=ctx.actor,
        action="signature.reconfirmed",
        letter_slug=letter.slug,
        member_id=principal.member_id,
        detail={
            **_signing_detail(ctx, letter),
            "from_version": signed_version,
            "signed_at": signed_at.isoformat(),
            "by": "staff" if staff is not None else "member",
            **(proxy.proxy_detail(staff, principal) if staff is not None else {}),
        },
    )
    context = {
        "title": letter.title,
        "name": principal.rendered_name(),
        "group": principal.group,
        "version": letter.version_number,
        "signed_at": format_utc(signed_at),
        "deadline": format_utc(letter.deadline),
        "awaiting": awaiting,
    }
    if staff is not None:
        return Reply("replies/reconfirmed_for.j2", context, "private")
    return Reply("replies/reconfirmed.j2", context, "private")


@REGISTRY.command("sign", usage="sign [SLUG] [for MEMBER_ID]", template="replies/signed.j2")
def sign(ctx: Context, args: list[str]) -> dict[str, Any] | Reply:
    """Sign a letter (the one open in this channel if you leave out SLUG); staff add `for
    MEMBER_ID` to sign for a member they act for."""
    args, for_id = _split_for(ctx, args)
    letter = resolve_letter(ctx, args)
    require_signable(ctx, letter, "sign")
    inv = ctx.invocation
    member = ctx.member
    if member is None:
        display_name = clean_platform_text(inv.display_name)  # anyone chooses it: no escapes
        pending = members.add_pending(
            ctx.session,
            platform=inv.platform,
            external_id=inv.user,
            display_name=display_name,
            channel=inv.channel,
            letter_pk=letter.id,
        )
        if pending is not None:  # None: over a cap (logged); the reply is the same
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
    principal = _principal(ctx, member, for_id, "sign")
    if principal is not member:
        return _sign_for(ctx, letter, member, principal)
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
    if not outcome.created and outcome.signature.awaiting_reconfirmation:
        return _reconfirm(ctx, letter, member, outcome.signature)
    if not outcome.created and outcome.signature.awaiting_member:
        return _confirm_own(ctx, letter, member, outcome.signature)
    if not outcome.created and outcome.signature.signed_by_pk is not None:
        signer = proxy.signer_of(ctx.session, outcome.signature)
        return _already(letter, member, outcome.signature, signer)  # says their staff signed
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
        detail=_signing_detail(ctx, letter),
    )
    return {
        "title": letter.title,
        "name": name,
        "group": group,
        "slug": letter.slug,
        "deadline": format_utc(letter.deadline),
    }


@REGISTRY.command("unsign", usage="unsign [SLUG] [for MEMBER_ID]", template="replies/withdrawn.j2")
def unsign(ctx: Context, args: list[str]) -> dict[str, Any] | Reply:
    """Withdraw your signature before the deadline (staff: `for MEMBER_ID`, a member's)."""
    args, for_id = _split_for(ctx, args)
    letter = resolve_letter(ctx, args)
    require_signable(ctx, letter, "withdraw")
    member = ctx.member
    if member is None:
        raise CommandError("This account is not linked to a roster member, so it has no signature.")
    principal = _principal(ctx, member, for_id, "unsign")
    if principal is not member:
        return _unsign_for(ctx, letter, member, principal)
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


def _unsign_for(ctx: Context, letter: Letter, staff: Member, principal: Member) -> Reply:
    """Staff withdraw a member's signature (whoever gave it); the member is told."""
    withdrawn = signatures.withdraw(ctx.session, letter=letter, member=principal, at=ctx.now)
    if withdrawn is None:
        raise CommandError(
            f"{principal.rendered_name()} has not signed “{letter.title}”, so there is nothing "
            "to withdraw."
        )
    audit.append(
        ctx.session,
        actor=ctx.actor,
        action="signature.withdrawn",
        letter_slug=letter.slug,
        member_id=principal.member_id,
        detail={
            "platform": ctx.invocation.platform,
            "account": ctx.invocation.user,
            **proxy.proxy_detail(staff, principal),
        },
    )
    proxy.tell(
        ctx.session,
        letter=letter,
        to=principal,
        about=f"proxy-withdrawn:{withdrawn.id}",
        template="replies/dm_withdrawn_for.j2",
        context={
            "staff": staff.rendered_name(),
            "name": principal.rendered_name(),
            "at": format_utc(ctx.now),
        },
    )
    return Reply(
        "replies/withdrawn_for.j2",
        {"title": letter.title, "name": principal.rendered_name(), "group": principal.group},
        "private",
    )
