"""Which call events the service-level figures read, and how long they are kept.

The outbox copies these events (in the same script that stores them in the partition
streams) to ``{prefix}:levels``, a stream the pusher never deletes from: the figures
(``ivr/agents/levels.py``) are rebuilt from it after a restart, for any day within
the retention.
"""

from __future__ import annotations

LEVEL_TYPES = frozenset({"queue.joined", "queue.abandoned", "agent.connected", "call.ended"})
LEVEL_PREFIXES = ("callback.",)
# entries of the levels stream older than this are trimmed (XADD MINID ~)
LEVELS_RETENTION_DAYS = 35
LEVELS_RETENTION_S = LEVELS_RETENTION_DAYS * 86_400


def is_level_type(type_: str) -> bool:
    """True for the event types the service-level figures are computed from."""
    return type_ in LEVEL_TYPES or type_.startswith(LEVEL_PREFIXES)
