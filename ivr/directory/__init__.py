"""The directory (通讯录): who an agent can bring into a call or transfer it to.

Defined in ``dialplans/`` (``departments:``, ``emergency:``, ``interpreters:``,
``partners:``; loaded and validated by :mod:`ivr.dialplan`, all four in
``Definition.directory`` by id).  This package resolves what an agent, the API or a
slice asks for into what to dial — pure functions, no I/O, the time passed in::

    from ivr.directory import resolve, fallback_for, DirectoryError

    target = resolve(definition, "market")          # a directory id …
    target = resolve(definition, "020-1234 5678")   # … or a number (separators dropped)
    target.dial_string      # "Local/2001@outbound"  (Originate Channel= / Dial())
    target.id               # "market" (None for a number not in the directory):
                            #   the department id that goes to the ticket
    target.kind             # department | emergency | interpreter | partner | number
    target.open_now         # its hours at `now` (always True without hours)
    target.open_state       # the OpenState (reason, holiday …) or None
    target.fallback         # Fallback(kind "queue"|"entry", name) or None
    fallback_for(definition, target)  # FallbackOffer: the queue, or the first open
                                      #   entry along the chain (resolved)

    resolve_one_key(definition, "110")   # one-key transfer (一键转接): only emergency
                                         #   services marked one_key; else NotOneKey
    one_key_services(definition)         # the one-key list (police 110, fire 119 …)
    interpreter_for(definition, "en")    # the interpreter desk of a language

Bad targets raise :class:`DirectoryError` subclasses before anything is dialled —
:class:`UnknownTarget` (neither an id nor a number), :class:`NotDialable` (a number
Asterisk cannot dial), :class:`NotOneKey` — with ``http_status`` and ``code`` for the
HTTP API and messages in English and Chinese.  A closed target still resolves
(``open_now`` False): whether to refuse, warn or offer the fallback is the caller's
choice (a three-way offers the fallback; a one-key 110 transfer never checks hours:
emergency services have none).
"""

from ivr.directory.errors import DirectoryError, NotDialable, NotOneKey, UnknownTarget
from ivr.directory.resolve import (
    DialTarget,
    FallbackOffer,
    fallback_for,
    interpreter_for,
    lookup_number,
    normalise_number,
    one_key_services,
    resolve,
    resolve_one_key,
)

__all__ = [
    "DialTarget",
    "DirectoryError",
    "FallbackOffer",
    "NotDialable",
    "NotOneKey",
    "UnknownTarget",
    "fallback_for",
    "interpreter_for",
    "lookup_number",
    "normalise_number",
    "one_key_services",
    "resolve",
    "resolve_one_key",
]
