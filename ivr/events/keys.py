"""Redis key layout of the outbox (one place, shared by writer, pusher, CLI).

- ``{prefix}:p{n}``     partition stream ``n`` (a call always maps to the same partition)
- ``{prefix}:dead``     dead-letter stream
- ``{prefix}:blocked``  set of call ids with an event in the dead-letter stream
- ``{prefix}:stats``    hash of counters: written, delivered, dead_lettered, replayed, retries
- ``{prefix}:lease:p{n}`` which pusher owns partition ``n``: ``consumer/token`` (PX, renewed)
- ``{prefix}:fence:p{n}`` partition ``n``'s fencing token: incremented by every lease
  acquisition; a pusher's writes under the lease require it unchanged
- ``{prefix}:levels``   stream of the events the service-level figures read (queue,
  agent.connected, callback, call.ended), trimmed by age, never by delivery
- ``{prefix}:calls``    hash of the checkpoints of calls in progress: call id → state JSON
- ``{prefix}:calls:{server}`` the same for the calls of a named Asterisk server
  (several servers, ``[[asterisk]]``); the unnamed one (``[ami]``) uses ``{prefix}:calls``
- ``{prefix}:owner:{server}:lease|fence|pos|steps|bridges`` the owner lease of one
  Asterisk's call events when several bridges serve it (ivr/failover): who owns it
  (``consumer/token``, PX), its fencing token, how far the owner's stored events go
  (hash: ``ami`` = mark and count, ``step`` = steps stream id), the IVR steps of its
  calls (a stream every bridge adds to, the owner applies), and each bridge's role
- ``{prefix}:pushers``  hash of the live pushers: consumer → until when (unix ms) it
  counts; each takes at most its fair share of the partitions (ivr/events/pusher.py)
- ``{prefix}:outage``   hash of the pushers in a backend outage: consumer → JSON
  (since, last error, failures, updated); a pusher removes its field when it ends
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

GROUP = "pusher"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str
    partitions: int

    def partition_of(self, call_id: str) -> int:
        return zlib.crc32(call_id.encode("utf-8")) % self.partitions

    def stream(self, partition: int) -> str:
        return f"{self.prefix}:p{partition}"

    def stream_for(self, call_id: str) -> str:
        return self.stream(self.partition_of(call_id))

    @property
    def streams(self) -> list[str]:
        return [self.stream(p) for p in range(self.partitions)]

    @property
    def dead(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def blocked(self) -> str:
        return f"{self.prefix}:blocked"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    @property
    def calls(self) -> str:
        return f"{self.prefix}:calls"

    def calls_of(self, server: str) -> str:
        """The checkpoints of one Asterisk server's calls (``""``: the unnamed one)."""
        return self.calls if not server else f"{self.prefix}:calls:{server}"

    def owner(self, server: str, part: str) -> str:
        """A key of the owner lease of ``server``'s call events: ``lease``, ``fence``,
        ``pos``, ``steps`` or ``bridges``."""
        return f"{self.prefix}:owner:{server or '-'}:{part}"

    @property
    def levels(self) -> str:
        return f"{self.prefix}:levels"

    @property
    def pushers(self) -> str:
        return f"{self.prefix}:pushers"

    @property
    def outage(self) -> str:
        return f"{self.prefix}:outage"

    def lease(self, partition: int) -> str:
        return f"{self.prefix}:lease:p{partition}"

    def fence(self, partition: int) -> str:
        return f"{self.prefix}:fence:p{partition}"
