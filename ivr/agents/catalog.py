"""What the agents' service takes from the published definition (dialplans/): the
pause-reason catalog (``pause_reasons:``) and each queue's wrap-up (``wrapup:``, rendered
as queues.conf ``wrapuptime``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ivr.agents.errors import UnknownPauseReason
from ivr.dialplan.model import Definition


@dataclass(frozen=True, slots=True)
class AgentCatalog:
    pause_reasons: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """code → label (the label is what Asterisk stores as PausedReason)."""
    wrapup: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """queue → wrap-up seconds."""

    @classmethod
    def from_definition(cls, definition: Definition) -> AgentCatalog:
        return cls(
            MappingProxyType({c: r.label for c, r in definition.pause_reasons.items()}),
            MappingProxyType({n: q.wrapup for n, q in definition.queues.items()}))

    def reason_label(self, reason: str) -> str:
        """The label for ``reason``, given by its code (``lunch``) or its label
        (``午休 lunch``); raises :class:`UnknownPauseReason`."""
        text = reason.strip()
        if text in self.pause_reasons:
            return self.pause_reasons[text]
        if text in self.pause_reasons.values():
            return text
        raise UnknownPauseReason(reason, [f"{c} ({lbl})" for c, lbl in
                                          self.pause_reasons.items()])

    def reason_code(self, label: str) -> str | None:
        """The code of a PausedReason Asterisk reports (None: not from the catalog)."""
        for code, lbl in self.pause_reasons.items():
            if lbl == label:
                return code
        return None
