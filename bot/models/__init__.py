"""SQLModel tables, one module per entity (DESIGN.md §3)."""

from __future__ import annotations

from bot.models.audit import AuditEvent
from bot.models.copies import CopiesStatus, LetterCopies
from bot.models.event import HandledEvent
from bot.models.letter import (
    Compilation,
    CompiledFile,
    Letter,
    LetterState,
    LetterVersion,
    Post,
    Reminder,
)
from bot.models.matrix import MatrixSyncState
from bot.models.member import Identity, Member, PendingRequest, Role, StaffLink
from bot.models.outbox import OutboxMessage
from bot.models.signature import Signature

__all__ = [
    "AuditEvent",
    "Compilation",
    "CompiledFile",
    "CopiesStatus",
    "HandledEvent",
    "Identity",
    "Letter",
    "LetterCopies",
    "LetterState",
    "LetterVersion",
    "MatrixSyncState",
    "Member",
    "OutboxMessage",
    "PendingRequest",
    "Post",
    "Reminder",
    "Role",
    "Signature",
    "StaffLink",
]
