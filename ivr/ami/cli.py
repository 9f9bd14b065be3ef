"""``ivr ami …`` commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ivr.ami.codec import AMIParser
from ivr.ami.messages import Banner, EventList, Incoming, Message, ProtocolIssue


def message_to_json(msg: Message) -> dict[str, Any]:
    """Every header as a key in the order received; a repeated header as a list."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in msg.headers.items()}


def incoming_to_json(item: Incoming) -> list[dict[str, Any]]:
    """One JSON object per wire message (a list result is flattened back to its frames)."""
    if isinstance(item, Banner):
        return [{"Banner": item.text}]
    if isinstance(item, ProtocolIssue):
        return [{"ProtocolIssue": item.reason, "Raw": item.raw}]
    if isinstance(item, EventList):
        out = [message_to_json(item.response)]
        out.extend(message_to_json(e) for e in item.events)
        if item.complete is not None:
            out.append(message_to_json(item.complete))
        return out
    return [message_to_json(item)]


def _decode(args: argparse.Namespace) -> int:
    parser = AMIParser(expect_banner=not args.no_banner, group_lists=False)
    issues = 0
    with open(args.file, "rb") if args.file != "-" else sys.stdin.buffer as fh:
        items: list[Incoming] = []
        while chunk := fh.read(65536):
            items.extend(parser.feed(chunk))
        items.extend(parser.feed_eof())
    out = sys.stdout
    for item in items:
        if isinstance(item, ProtocolIssue):
            issues += 1
        for obj in incoming_to_json(item):
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return 1 if issues and args.strict else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ami = sub.add_parser("ami", help="AMI tools (decode captured traffic) / AMI 工具")
    ami_sub = ami.add_subparsers(dest="ami_command", metavar="SUBCOMMAND", required=True)
    dec = ami_sub.add_parser(
        "decode",
        help="print a raw AMI capture as one JSON object per message / 将 AMI 抓包解码为 JSON 行",
    )
    dec.add_argument("file", help="raw capture (like ami.server.raw), or - for stdin")
    dec.add_argument(
        "--no-banner", action="store_true", help="the capture has no banner (client side)"
    )
    dec.add_argument(
        "--strict", action="store_true", help="exit 1 if the capture had protocol issues"
    )
    dec.set_defaults(func=_decode)
