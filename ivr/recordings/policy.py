"""The recording policy: which calls are recorded and how they are archived.

It is part of the hotline's definition — the ``recordings:`` section of ``dialplans/``
(shipped in ``dialplans/recordings.yaml``), read and validated by the dialplan loader
with file and line in every message, in the JSON Schema for editors, checked against the
definition's entries and queues by ``ivr dialplan validate``, published and reloaded with
the rest::

    recordings:
      default:               # every call, unless an exception says otherwise
        record: true         # callers hear the recording notice (statutory)
        channels: stereo     # stereo: caller left, agent right (r()/t() legs); mono
        format: mp3          # mp3 | opus
        level_dbfs: -3.0     # peak normalisation target
      entries:               # exceptions by dialled number …
        "12333": {record: false}
      queues:                # … and by queue (a queue's exception wins over its entry's)
        english: {channels: mono}

Where archives go and how long they are kept are *settings* (``[recordings] dir``,
``retention_days``): they are about the machine, not about the hotline.
"""

from __future__ import annotations

from ivr.dialplan.model import Definition, RecordingException, RecordingRule, Recordings

RecordingPolicy = Recordings
Rule = RecordingRule

__all__ = ["RecordingException", "RecordingPolicy", "Rule", "policy_of"]


def policy_of(definition: Definition) -> Recordings:
    return definition.recordings
