"""Exception tree of the quality-review slice (zh/en messages; ``http_status``/``code``
for the HTTP API).  Bad input is refused before anything is stored or emitted."""

from __future__ import annotations

from ivr.errors import IvrError


class QualityError(IvrError):
    http_status = 400
    code = "quality_error"


class QualityPolicyError(QualityError):
    """The ``[quality]`` table of the staff policy file is invalid (file and key named)."""

    http_status = 500
    code = "quality_policy_invalid"


class NotReviewer(QualityError):
    http_status = 403
    code = "not_reviewer"


class OutsideReviewedQueues(QualityError):
    http_status = 403
    code = "outside_reviewed_queues"


class UnknownReview(QualityError):
    http_status = 404
    code = "unknown_review"


class OffFormScore(QualityError):
    """A score that is not on the form: an unknown or missing item, a value out of range."""

    http_status = 400
    code = "off_form_score"


class NotOwnCall(QualityError):
    http_status = 403
    code = "not_own_call"


class ReviewConflict(QualityError):
    """Appealing a review that is not scored, or twice; scoring an appealed review."""

    http_status = 409
    code = "review_conflict"


class RecordingUnavailable(QualityError):
    http_status = 404
    code = "recording_unavailable"
