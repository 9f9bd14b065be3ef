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
