"""Exception tree of the supervision slice.  Every message says what was wrong and where,
in English and Chinese; ``http_status``/``code`` say how the HTTP API answers it.  Each is
raised before anything is sent to Asterisk (bad input changes nothing)."""

from __future__ import annotations

from ivr.errors import IvrError


class SupervisionError(IvrError):
    """Base of the slice's errors."""

    http_status = 400
    code = "supervision_error"


class StaffPolicyError(SupervisionError):
    """The staff policy file (``[paths] staff_policy``) is invalid: names the file and key."""

    http_status = 500
    code = "staff_policy_invalid"


class NotSupervisor(SupervisionError):
    """The actor may not supervise (an agent, or nobody in the policy by that name)."""

    http_status = 403
    code = "not_supervisor"


class NotSupervisorsPhone(SupervisionError):
    """The phone asked for is not one of the supervisor's configured phones."""

    http_status = 403
    code = "not_supervisors_phone"


class OutsideSupervisedQueues(SupervisionError):
    """The call is in a queue the supervisor does not supervise."""

    http_status = 403
    code = "outside_supervised_queues"


class CallNotLive(SupervisionError):
    """The call ended, or there is no such call in progress."""

    http_status = 404
    code = "call_not_live"


class NotAgentChannel(SupervisionError):
    """The channel named is not an agent's leg of the call (or the call has no agent)."""

    http_status = 409
    code = "not_agent_channel"


class BadMode(SupervisionError):
    http_status = 400
    code = "invalid_mode"


class UnknownSession(SupervisionError):
    http_status = 404
    code = "unknown_session"


class SessionConflict(SupervisionError):
    """The supervisor (or that phone) is already on a call, or the session has ended."""

    http_status = 409
    code = "supervision_conflict"


class AsteriskUnavailable(SupervisionError):
    http_status = 503
    code = "ami_unavailable"


class AsteriskRefused(SupervisionError):
    http_status = 502
    code = "asterisk_refused"
