"""HMAC-SHA256 request signatures (pure).

``X-Ivr-Signature: v1=<hex>`` where ``<hex>`` is HMAC-SHA256(secret, ``"<ts>." + body``)
and ``X-Ivr-Timestamp: <ts>`` is Unix seconds.  A receiver rejects a signature that does
not match or whose timestamp is more than ``max_age`` seconds away from its clock.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from ivr.events.errors import SignatureError

SIGNATURE_HEADER = "X-Ivr-Signature"
TIMESTAMP_HEADER = "X-Ivr-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_MAX_AGE = 300.0


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_headers(secret: bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    ts = int(now if now is not None else time.time())
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body)}


def verify(
    secret: bytes,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    now: float | None = None,
    max_age: float = DEFAULT_MAX_AGE,
) -> None:
    """Raise :class:`SignatureError` saying what is wrong."""
    if not timestamp or not signature:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not an integer: {timestamp[:20]!r}") from None
    clock = now if now is not None else time.time()
    if abs(clock - ts) > max_age:
        raise SignatureError(f"signature timestamp {ts} is more than {max_age:.0f}s from now")
    if not hmac.compare_digest(sign(secret, ts, body), signature.strip()):
        raise SignatureError("signature does not match")
