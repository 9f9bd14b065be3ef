"""Supervisors on the line (班长监听/耳语/强插): a supervisor joins a live agent call from
their own phone by AMI ``Originate`` of ``ChanSpy`` (as trace 13 records it) in listen,
whisper or barge mode, switches mode, leaves; every step is audited and a call event
(``supervision.*``).  See docs/supervision.md."""
