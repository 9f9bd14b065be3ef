"""Exception tree of the recordings slice: every error names the file or setting that was
wrong and reads in Chinese and English (an operator reads it)."""

from __future__ import annotations

from pathlib import Path

from ivr.errors import IvrError


class RecordingError(IvrError):
    """Base of the slice's errors."""


class RecordingPolicyError(RecordingError):
    """``dialplans/recordings.yaml`` is invalid (names the file and the key)."""


class ProcessingError(RecordingError):
    """One post-processing attempt failed; the job is retried, the raw file is kept."""

    def __init__(self, path: Path | str, why: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: post-processing failed: {why} / 录音后处理失败")


class StorageError(RecordingError):
    """The archive could not be written or verified."""


class RecordingRequestError(RecordingError):
    """An agent's request on a call's recording refused before anything was sent."""

    http_status = 409
    code = "recording_refused"


class RecordingCallNotFound(RecordingRequestError):
    http_status = 404
    code = "recording_no_call"

    def __init__(self, call_id: str, ended: bool) -> None:
        what = "has ended" if ended else "is not a call in progress with a caller channel"
        zh = "已结束" if ended else "不是进行中的通话"
        super().__init__(f"call {call_id!r} {what} / 通话 {call_id!r} {zh}")


class NotRecorded(RecordingRequestError):
    code = "recording_not_running"

    def __init__(self, call_id: str) -> None:
        super().__init__(f"call {call_id!r} is not being recorded / 通话 {call_id!r} 未在录音")


class AlreadyRecorded(RecordingRequestError):
    code = "recording_running"

    def __init__(self, call_id: str) -> None:
        super().__init__(f"call {call_id!r} is already being recorded / 通话 {call_id!r} "
                         "已在录音")


class RecordingBadDirection(RecordingRequestError):
    http_status = 422
    code = "recording_bad_direction"

    def __init__(self, direction: str, known: list[str]) -> None:
        super().__init__(f"unknown direction {direction!r} (one of: {', '.join(known)}) / "
                         f"方向 {direction!r} 无效")


class RecordingAsteriskRefused(RecordingError):
    http_status = 502
    code = "recording_asterisk_refused"

    def __init__(self, action: str, call_id: str, message: str) -> None:
        super().__init__(f"Asterisk refused {action} for call {call_id!r}: {message} / "
                         f"Asterisk 拒绝了 {action}：{message}")
