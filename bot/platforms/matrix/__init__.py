"""The Matrix platform, one module per part.

- ``platform``: ``MatrixPlatform``, the adapter the bot runs (start, stop, commands in, replies out)
- ``session``: login, the access token and the encrypted key store in ``store_path``
- ``sync``: cosign's own ``/sync`` loop with its checkpoint and handled-event ids (rule 10)
- ``replies``: command replies, queued durably and sent in order
- ``send``: sending with transaction ids, rate-limit gates and back-off
- ``content``: event content (notices, edits, files) and its size within the event limit
- ``outbox``: letter posts, live counters and compiled letters from the outbox
"""

from __future__ import annotations

from bot.platforms.matrix.platform import MatrixPlatform

__all__ = ["MatrixPlatform"]
