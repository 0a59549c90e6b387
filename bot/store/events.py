"""Handled platform events: insert-once, so a retried delivery is recognised."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from bot.models import HandledEvent


def was_handled(session: Session, *, platform: str, event_id: str) -> bool:
    query = select(HandledEvent.id).where(
        HandledEvent.platform == platform, HandledEvent.event_id == event_id
    )
    return session.exec(query).first() is not None


def mark_handled(session: Session, *, platform: str, event_id: str) -> bool:
    """Record the event; False when it was already recorded (a retry or a replay)."""
    if was_handled(session, platform=platform, event_id=event_id):
        return False
    try:
        with session.begin_nested():
            session.add(HandledEvent(platform=platform, event_id=event_id))
    except IntegrityError:
        return False
    return True
