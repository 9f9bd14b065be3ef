""":class:`~ivr.dialplan.publish.AmiControl` on the project's AMI client."""

from __future__ import annotations

from dataclasses import dataclass

from ivr.ami.client import AMIClient
from ivr.ami.errors import AMIActionFailed
from ivr.ami.messages import EventList, Response


@dataclass
class ClientControl:
    """``command``/``reload`` over a started :class:`AMIClient`."""

    client: AMIClient
    timeout: float = 10.0

    async def command(self, cmd: str) -> list[str]:
        result = await self.client.send_action("Command", {"Command": cmd}, timeout=self.timeout)
        response = result.response if isinstance(result, EventList) else result
        if not response.success:
            raise AMIActionFailed(f"Command {cmd!r}", response)
        return _output(response)

    async def reload(self, module: str) -> None:
        await self.client.send_action("Reload", {"Module": module}, timeout=self.timeout,
                                      check=True)


def _output(response: Response) -> list[str]:
    """The ``Output:`` lines of a Command response (Asterisk 14+ framing)."""
    return response.getall("Output")
