"""Exception tree of the prompts layer."""

from __future__ import annotations

from ivr.errors import IvrError


class PromptError(IvrError):
    """Base of every prompts-layer error."""


class CatalogError(PromptError):
    """``prompts/catalog.yaml`` is missing, malformed or names an unknown language."""


class AudioFormatError(PromptError):
    """A prompt file cannot be read as audio Asterisk plays (names the file and why)."""


class PromptImportError(PromptError):
    """An audio file an admin brought could not be converted (names the file and why)."""


class SynthesisError(PromptError):
    """espeak-ng (or ffmpeg behind it) failed to produce a prompt."""
