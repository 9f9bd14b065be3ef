"""Masking of phone numbers: caller numbers never reach a log in clear.

Chinese mobile numbers are 11 digits starting with 1[3-9]; landlines are an area
code starting with 0 plus 7–8 digits.  ``mask_number`` keeps the first three and the
last four digits of anything that long (``13800138000`` → ``138****8000``) and masks
all but the last two of shorter numbers (short codes such as 12345 or 110 stay clear,
they are service numbers, not people).
"""

from __future__ import annotations

import re

_SERVICE_MAX_DIGITS = 6

# Phone numbers as people write them: 13800138000, 138-0013-8000, 138 0013 8000,
# +86 138 0013 8000, 008613800138000, 0755-8888 6666, +86 755 8888 6666 — not part of a
# longer number, nor of an Asterisk uniqueid/timestamp (``1795883958.1``: digits, '.',
# digits).  Matched on text whose full-width digits and signs are folded to ASCII.
_SEP = r"[- ]?"
_PHONE_RE = re.compile(
    r"(?<!\d)(?<!\d\.)"
    rf"(?:(?P<cc>(?:\+|00)86{_SEP})?1[3-9]\d{_SEP}\d{{4}}{_SEP}\d{{4}}"  # mobile
    rf"|0\d{{2,3}}{_SEP}\d{{3,4}}{_SEP}\d{{4}}"  # landline, national form
    rf"|(?P<icc>(?:\+|00)86{_SEP})[2-9]\d{{1,2}}{_SEP}\d{{3,4}}{_SEP}\d{{4}})"  # international
    r"(?!\d)(?!\.\d)",
    re.ASCII,
)
# Full-width digits, plus, hyphen and space (what an IME types) → ASCII, one for one, so
# match positions in the folded text are positions in the original.
_FOLD = {0xFF10 + i: ord("0") + i for i in range(10)} | {
    0xFF0B: ord("+"), 0xFF0D: ord("-"), 0x3000: ord(" ")}


def mask_number(number: str | None) -> str:
    """Mask a caller number for logs and non-privileged views."""
    if not number:
        return ""
    digits = [c for c in number if c.isdigit()]
    if len(digits) <= _SERVICE_MAX_DIGITS:
        return number
    n = len(digits)
    keep_head, keep_tail = (3, 4) if n >= 10 else (2, 2)
    out: list[str] = []
    seen = 0
    for c in number:
        if c.isdigit():
            out.append(c if seen < keep_head or seen >= n - keep_tail else "*")
            seen += 1
        else:
            out.append(c)
    return "".join(out)


def scrub(text: str) -> str:
    """Mask every phone-looking number inside free text (log messages, file names),
    whatever its spacing, prefix (+86, 0086) or width."""
    folded = text.translate(_FOLD)
    matches = list(_PHONE_RE.finditer(folded))
    if not matches:
        return text
    out: list[str] = []
    last = 0
    for m in matches:
        start, end = m.span()
        # the country code stays readable; the national number is masked
        cc = len(m.group("cc") or m.group("icc") or "")
        out.append(text[last:start + cc])
        out.append(mask_number(text[start + cc:end]))
        last = end
    out.append(text[last:])
    return "".join(out)
