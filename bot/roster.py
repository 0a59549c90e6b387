"""Roster CSV import (all or nothing, every problem with its line number) and export."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from bot.models import Identity, Member, Role, StaffLink
from bot.models._types import utcnow
from bot.names import nfc
from bot.store import audit
from bot.store.members import identities_of, link_identity, list_members

COLUMNS = (
    "member_id",
    "title",
    "given_name",
    "family_name",
    "post_nominals",
    "group",
    "display_name",
    "email",
    "slack_id",
    "matrix_id",
    "role",
)
# Optional columns: exported only when the roster uses them, so older files stay as they were.
ACTS_FOR = "acts_for"  # staff only: the member_ids it acts for, separated by ';' (DESIGN.md §8)
OPTIONAL_COLUMNS = (ACTS_FOR,)
_KNOWN_COLUMNS = COLUMNS + OPTIONAL_COLUMNS
_MEMBER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_MATRIX_ID = re.compile(r"^@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+(:\d{1,5})?$")
_SLACK_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


class RosterError(ValueError):
    """The roster was refused; ``problems`` lists every one with its line number."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"roster refused: {len(problems)} problem(s)")
        self.problems = problems


@dataclass
class RosterRow:
    line: int
    values: dict[str, str]


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    linked: list[str] = field(default_factory=list)


def parse_roster(data: bytes | str, *, known: dict[str, str] | None = None) -> list[RosterRow]:
    """Parse and validate; raise RosterError with every problem found.

    `known`: {member_id: role} of members already in the database, which `acts_for` may name
    without the file repeating them.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise RosterError([f"the file is not UTF-8 (byte {exc.start})"]) from None
    else:
        text = data.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise RosterError(["line 1: the file is empty; a header line is required"]) from None
    except csv.Error as exc:
        raise RosterError([f"line 1: {exc}"]) from None
    names = [nfc(h.strip()).lower() for h in header]
    problems: list[str] = []
    missing = [c for c in ("member_id", "family_name", "group") if c not in names]
    if missing:
        problems.append(f"line 1: header is missing column(s): {', '.join(missing)}")
    unknown = [n for n in names if n not in _KNOWN_COLUMNS]
    if unknown:
        problems.append(f"line 1: unknown column(s): {', '.join(unknown)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"line 1: repeated column(s): {', '.join(dupes)}")
    if problems:
        raise RosterError(problems)
    rows: list[RosterRow] = []
    try:
        last = reader.line_num
        for record in reader:
            line, last = last + 1, reader.line_num  # the physical line the record starts on
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(names):
                problems.append(f"line {line}: expected {len(names)} fields, found {len(record)}")
                continue
            values = {c: "" for c in COLUMNS}  # optional columns only when the file has them
            values.update({n: nfc(v.strip()) for n, v in zip(names, record, strict=True)})
            rows.append(RosterRow(line, values))
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: {exc}")
    problems.extend(_validate(rows))
    problems.extend(_validate_acts_for(rows, known or {}))
    if problems:
        raise RosterError(sorted(problems, key=_line_of))
    return rows


def _line_of(problem: str) -> int:
    match = re.match(r"line (\d+)", problem)
    return int(match.group(1)) if match else 0


def _validate(rows: list[RosterRow]) -> list[str]:
    problems: list[str] = []
    seen_ids: dict[str, int] = {}
    seen_accounts: dict[tuple[str, str], int] = {}
    for row in rows:
        v, line = row.values, row.line
        role = v["role"].lower() or Role.member.value
        v["role"] = role
        if not v["member_id"]:
            problems.append(f"line {line}: member_id is missing")
        elif not _MEMBER_ID.fullmatch(v["member_id"]):
            problems.append(
                f"line {line}: member_id {v['member_id']!r} may use letters, digits, '.', '_', '-'"
            )
        elif v["member_id"] in seen_ids:
            problems.append(
                f"line {line}: duplicate member_id {v['member_id']!r} "
                f"(first on line {seen_ids[v['member_id']]})"
            )
        else:
            seen_ids[v["member_id"]] = line
        if role not in (Role.member.value, Role.coordinator.value, Role.staff.value):
            problems.append(
                f"line {line}: unknown role {v['role']!r} (member, coordinator or staff)"
            )
        elif role == Role.member.value:
            if not v["family_name"]:
                problems.append(f"line {line}: family_name is missing")
            if not v["group"]:
                problems.append(f"line {line}: group is missing")
        elif role == Role.staff.value:
            if not (v["family_name"] or v["given_name"] or v["display_name"]):
                problems.append(
                    f"line {line}: staff need a name (given_name, family_name or display_name)"
                )
            if not v.get(ACTS_FOR, ""):
                problems.append(
                    f"line {line}: staff need acts_for: the member_ids they act for, "
                    "separated by ';'"
                )
        if v.get(ACTS_FOR, "") and role != Role.staff.value:
            problems.append(f"line {line}: acts_for is only for staff (role {role!r})")
        broken = [c for c in _KNOWN_COLUMNS if "\n" in v.get(c, "") or "\r" in v.get(c, "")]
        if broken:
            problems.append(f"line {line}: line break inside {', '.join(broken)}")
        if v["matrix_id"] and not _MATRIX_ID.fullmatch(v["matrix_id"]):
            problems.append(
                f"line {line}: matrix_id {v['matrix_id']!r} is not a Matrix user id "
                "like @name:server.org"
            )
        if v["slack_id"] and not _SLACK_ID.fullmatch(v["slack_id"]):
            problems.append(
                f"line {line}: slack_id {v['slack_id']!r} is not a Slack user id like U0123ABC"
            )
        if v["email"] and "@" not in v["email"]:
            problems.append(f"line {line}: email {v['email']!r} is not an e-mail address")
        for platform in ("slack", "matrix"):
            account = v[f"{platform}_id"]
            if not account:
                continue
            key = (platform, account)
            if key in seen_accounts:
                problems.append(
                    f"line {line}: duplicate {platform}_id {account!r} "
                    f"(first on line {seen_accounts[key]})"
                )
            else:
                seen_accounts[key] = line
    return problems


def acts_for_ids(value: str) -> list[str]:
    """'au-abetz; au-andrews' -> ['au-abetz', 'au-andrews'] (empties and repeats dropped)."""
    return list(dict.fromkeys(part.strip() for part in value.split(";") if part.strip()))


def _validate_acts_for(rows: list[RosterRow], known: dict[str, str]) -> list[str]:
    """Every member_id a staff row names must be a member (role member), in this file or, if
    the file does not mention it, already in the database."""
    roles = dict(known)
    roles.update({row.values["member_id"]: row.values["role"] for row in rows})
    problems = []
    for row in rows:
        if row.values["role"] != Role.staff.value:
            continue
        for member_id in acts_for_ids(row.values.get(ACTS_FOR, "")):
            role = roles.get(member_id)
            if role is None:
                problems.append(f"line {row.line}: acts_for names unknown member_id {member_id!r}")
            elif role != Role.member.value:
                problems.append(
                    f"line {row.line}: acts_for names {member_id!r}, a {role}: staff act for "
                    "members"
                )
    return problems


_MEMBER_FIELDS = (
    "title",
    "given_name",
    "family_name",
    "post_nominals",
    "group",
    "display_name",
    "email",
    "role",
)


def import_roster(session: Session, *, data: bytes | str, actor: str) -> ImportResult:
    """Create or update members by member_id; never deletes members or signatures.

    Members and identities are loaded once up front, so a 10,000-member roster costs a handful of
    queries plus the writes, not several queries a row.
    """
    members = {m.member_id: m for m in session.exec(select(Member)).all()}
    rows = parse_roster(data, known={m.member_id: m.role for m in members.values()})
    by_pk = {m.id: m for m in members.values()}
    identities = {(i.platform, i.external_id): i for i in session.exec(select(Identity)).all()}
    _check_account_owners(rows, identities, by_pk)
    acting = _acting(session, by_pk)
    result = ImportResult()
    for row in rows:
        v = row.values
        member = members.get(v["member_id"])
        wanted = acts_for_ids(v.get(ACTS_FOR, ""))
        if member is None:
            member = Member.model_validate(
                {"member_id": v["member_id"], **{f: v[f] for f in _MEMBER_FIELDS}}
            )
            session.add(member)
            members[member.member_id] = member
            result.created += 1
            audit.append(
                session,
                actor=actor,
                action="member.created",
                member_id=member.member_id,
                detail={f: v[f] for f in _MEMBER_FIELDS} | ({ACTS_FOR: wanted} if wanted else {}),
            )
        else:
            changes: dict[str, object] = {
                f: v[f] for f in _MEMBER_FIELDS if getattr(member, f) != v[f]
            }
            if acting.get(member.member_id, []) != wanted:
                changes[ACTS_FOR] = wanted
            if not member.active:
                changes["active"] = "true"
            if changes:
                for name, value in changes.items():
                    if name != ACTS_FOR:
                        setattr(member, name, True if name == "active" else value)
                member.updated_at = utcnow()
                session.add(member)
                result.updated += 1
                audit.append(
                    session,
                    actor=actor,
                    action="member.updated",
                    member_id=member.member_id,
                    detail=changes,
                )
            else:
                result.unchanged += 1
    session.flush()  # ids for the new members
    _sync_staff_links(session, rows, members)
    links = _Links(identities)
    for row in rows:
        member = members[row.values["member_id"]]
        for platform in ("slack", "matrix"):
            _sync_roster_link(
                session,
                links,
                member=member,
                platform=platform,
                account=row.values[f"{platform}_id"],
                actor=actor,
                result=result,
            )
    return result


def _acting(session: Session, by_pk: dict[int | None, Member]) -> dict[str, list[str]]:
    """{staff member_id: the member_ids it acts for, in the order they were imported}."""
    acting: dict[str, list[str]] = {}
    for link in session.exec(select(StaffLink).order_by(col(StaffLink.id))).all():
        staff, member = by_pk.get(link.staff_pk), by_pk.get(link.member_pk)
        if staff is not None and member is not None:
            acting.setdefault(staff.member_id, []).append(member.member_id)
    return acting


def _sync_staff_links(session: Session, rows: list[RosterRow], members: dict[str, Member]) -> None:
    """The file's rows own their staff links: each row's acts_for replaces what it had (a row
    that is not staff has none). The change itself is in the row's member.* audit event."""
    pks = [members[row.values["member_id"]].id for row in rows]
    existing: dict[int, list[StaffLink]] = {}
    for link in session.exec(
        select(StaffLink).where(col(StaffLink.staff_pk).in_(pks)).order_by(col(StaffLink.id))
    ).all():
        existing.setdefault(link.staff_pk, []).append(link)
    for row in rows:
        staff = members[row.values["member_id"]]
        assert staff.id is not None
        have = existing.get(staff.id, [])
        wanted = [members[m].id for m in acts_for_ids(row.values.get(ACTS_FOR, "")) if m in members]
        if [link.member_pk for link in have] == wanted:
            continue
        for link in have:
            session.delete(link)
        session.flush()
        for member_pk in wanted:
            assert member_pk is not None
            session.add(StaffLink(staff_pk=staff.id, member_pk=member_pk))


class _Links:
    """Identities by account and, for roster links, by (member, platform)."""

    def __init__(self, identities: dict[tuple[str, str], Identity]) -> None:
        self.by_account = identities
        self.roster: dict[tuple[int, str], list[Identity]] = {}
        for identity in identities.values():
            if identity.linked_via == "roster":
                self.roster.setdefault((identity.member_pk, identity.platform), []).append(identity)

    def add(self, identity: Identity) -> None:
        self.by_account[(identity.platform, identity.external_id)] = identity
        self.roster.setdefault((identity.member_pk, identity.platform), []).append(identity)

    def remove(self, identity: Identity) -> None:
        self.by_account.pop((identity.platform, identity.external_id), None)
        owned = self.roster.get((identity.member_pk, identity.platform), [])
        if identity in owned:
            owned.remove(identity)


def _check_account_owners(
    rows: list[RosterRow],
    identities: dict[tuple[str, str], Identity],
    by_pk: dict[int | None, Member],
) -> None:
    """Refuse chat ids linked to someone else, unless this file moves that person elsewhere."""
    new_ids = {
        (p, row.values["member_id"]): row.values[f"{p}_id"]
        for row in rows
        for p in ("slack", "matrix")
    }
    problems: list[str] = []
    for row in rows:
        for platform in ("slack", "matrix"):
            account = row.values[f"{platform}_id"]
            identity = identities.get((platform, account)) if account else None
            owner = by_pk.get(identity.member_pk) if identity is not None else None
            if identity is None or owner is None or owner.member_id == row.values["member_id"]:
                continue
            moving_away = (
                identity.linked_via == "roster"
                and (platform, owner.member_id) in new_ids
                and new_ids[(platform, owner.member_id)] != account
            )  # the same file gives the old owner another id: a swap or correction
            if not moving_away:
                problems.append(
                    f"line {row.line}: {platform}_id {account!r} is already linked "
                    f"to {owner.member_id!r}"
                )
    if problems:
        raise RosterError(problems)


def _sync_roster_link(
    session: Session,
    links: _Links,
    *,
    member: Member,
    platform: str,
    account: str,
    actor: str,
    result: ImportResult,
) -> None:
    """The roster owns roster links: a changed or removed chat id unlinks the old one."""
    assert member.id is not None
    for identity in list(links.roster.get((member.id, platform), [])):
        if identity.external_id != account:
            session.delete(identity)
            session.flush()
            links.remove(identity)
            audit.append(
                session,
                actor=actor,
                action="identity.unlinked",
                member_id=member.member_id,
                detail={"platform": platform, "account": identity.external_id},
            )
    if not account:
        return
    existing = links.by_account.get((platform, account))
    if existing is not None and existing.member_pk == member.id:
        return
    if existing is not None:  # moving from another member (a swap in this same file)
        links.remove(existing)
    if existing is None:
        identity = Identity(
            platform=platform,
            external_id=account,
            member_pk=member.id,
            linked_via="roster",
            linked_by=actor,
        )
        session.add(identity)
    else:
        identity = link_identity(
            session,
            platform=platform,
            external_id=account,
            member=member,
            linked_via="roster",
            linked_by=actor,
        )
    links.add(identity)
    result.linked.append(f"{platform}:{account}")
    audit.append(
        session,
        actor=actor,
        action="identity.linked",
        member_id=member.member_id,
        detail={"platform": platform, "account": account, "via": "roster"},
    )


def export_roster(session: Session) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    everyone = list_members(session)
    acting = _acting(session, {m.id: m for m in everyone})
    with_staff = bool(acting) or any(m.role == Role.staff.value for m in everyone)
    writer.writerow(COLUMNS + ((ACTS_FOR,) if with_staff else ()))
    for member in everyone:
        assert member.id is not None
        accounts = {
            i.platform: i.external_id
            for i in identities_of(session, member_pk=member.id)
            if i.linked_via == "roster"
        }
        writer.writerow(
            [
                member.member_id,
                member.title,
                member.given_name,
                member.family_name,
                member.post_nominals,
                member.group,
                member.display_name,
                member.email,
                accounts.get("slack", ""),
                accounts.get("matrix", ""),
                member.role,
                *([";".join(acting.get(member.member_id, []))] if with_staff else []),
            ]
        )
    return out.getvalue()
