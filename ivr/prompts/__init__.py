"""Voice prompts: the catalog of texts, Asterisk-playable audio files, import, offline
synthesis with espeak-ng, and the checks the dialplan validator and the IVR runtime use.

Layout: ``prompts/catalog.yaml`` (texts and languages), ``prompts/<lang>/<name>.wav``
(8 kHz mono 16-bit PCM; ``.sln`` and ``.ulaw`` also accepted) and
``prompts/manifest.json`` (which files are synthetic).
"""

from ivr.prompts.errors import (
    AudioFormatError,
    CatalogError,
    PromptError,
    PromptImportError,
    SynthesisError,
)
from ivr.prompts.library import (
    PROMPT_EXTENSIONS,
    PromptProblem,
    ResolvedPrompt,
    check_prompts,
    prompt_duration_ms,
    resolve_prompt,
)

__all__ = [
    "PROMPT_EXTENSIONS",
    "AudioFormatError",
    "CatalogError",
    "PromptError",
    "PromptImportError",
    "PromptProblem",
    "ResolvedPrompt",
    "SynthesisError",
    "check_prompts",
    "prompt_duration_ms",
    "resolve_prompt",
]
