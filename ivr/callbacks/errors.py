"""Exception tree of the callbacks slice (漏接回拨): every error names what was wrong and
reads in English and Chinese (an operator or supervisor reads it).  Input errors are
raised before anything is sent to Asterisk; ``http_status``/``code`` are what the HTTP
API answers (ivr/api/errors.from_domain)."""

from __future__ import annotations

from ivr.errors import IvrError


class CallbackError(IvrError):
    """Base of the slice's errors."""

    http_status = 500
    code = "callback_error"


class CallbackInputError(CallbackError):
    """Bad input: refused, nothing changed (in Redis or in Asterisk)."""

    http_status = 400
    code = "bad_callback_input"


class UndialableNumber(CallbackInputError):
    code = "undialable_number"

    def __init__(self, number: str, why: str) -> None:
        self.number = number
        super().__init__(f"callback number {number!r} is not a dialable number: {why} / "
                         f"回拨号码 {number!r} 无法拨打：{why}")


class UnknownJob(CallbackInputError):
    http_status = 404
    code = "unknown_callback"

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"unknown callback job {job_id!r} (see `ivr callbacks list`) / "
                         f"回拨任务 {job_id!r} 不存在")


class UnknownQueue(CallbackInputError):
    http_status = 404
    code = "unknown_queue"

    def __init__(self, queue: str, known: list[str]) -> None:
        self.queue = queue
        shown = ", ".join(known) or "none / 无"
        super().__init__(f"unknown queue {queue!r} for a callback (defined: {shown}) / "
                         f"回拨队列 {queue!r} 不存在（现有队列：{shown}）")


class JobFinished(CallbackInputError):
    http_status = 409
    code = "callback_finished"

    def __init__(self, job_id: str, state: str) -> None:
        self.job_id = job_id
        self.state = state
        super().__init__(f"callback job {job_id!r} is already {state}: nothing to cancel / "
                         f"回拨任务 {job_id!r} 已结束（{state}），无法取消")


class JobBusy(CallbackInputError):
    http_status = 409
    code = "callback_in_progress"

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"callback job {job_id!r} is being placed right now: try again when "
                         f"the attempt has ended / 回拨任务 {job_id!r} 正在外呼，请稍后再试")


class CallbacksUnavailable(CallbackError):
    http_status = 503
    code = "callbacks_unavailable"
