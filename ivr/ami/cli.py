"""``ivr ami …`` commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from ivr.ami.codec import AMIParser, FieldValue
from ivr.ami.errors import AMIError
from ivr.ami.messages import Banner, EventList, Incoming, Message, ProtocolIssue, Response


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


def _send(args: argparse.Namespace) -> int:
    from ivr.ami.client import AMIClient, AMISettings

    fields: dict[str, list[str]] = {}
    for item in args.fields:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"bad field {item!r}: expected Name=value / 字段格式应为 名称=值",
                  file=sys.stderr)
            return 2
        fields.setdefault(name, []).append(value)
    if args.secret is not None:
        print("--secret is refused: a secret on the command line is visible to every user "
              "of the machine (ps, shell history); use IVR_AMI_SECRET or --secret-file / "
              "拒绝命令行中的密码，请使用 IVR_AMI_SECRET 或 --secret-file", file=sys.stderr)
        return 2
    secret_file = args.secret_file or os.environ.get("IVR_AMI_SECRET_FILE")
    secret = os.environ.get("IVR_AMI_SECRET", "")
    if secret_file:
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            print(f"cannot read the secret file {secret_file}: {exc.__class__.__name__} / "
                  "无法读取密码文件", file=sys.stderr)
            return 2
    if not secret:
        print("no secret: set IVR_AMI_SECRET or give --secret-file (or IVR_AMI_SECRET_FILE) "
              "/ 未提供 AMI 密码", file=sys.stderr)
        return 2
    flat: dict[str, FieldValue] = {k: v[0] if len(v) == 1 else v for k, v in fields.items()}
    settings = AMISettings(auth="plain" if args.plain else "md5", events="off",
                           ping_interval=0, action_timeout=args.timeout)

    async def run() -> Response | EventList:
        client = AMIClient(args.host, args.port, username=args.user, secret=secret,
                           settings=settings)
        try:
            async with asyncio.timeout(args.timeout):
                await client.start()
            return await client.send_action(args.action, flat)
        finally:
            await client.close()

    try:
        result = asyncio.run(run())
    except TimeoutError:
        print(f"cannot reach Asterisk AMI at {args.host}:{args.port} within {args.timeout:g}s"
              " / 无法连接 Asterisk AMI", file=sys.stderr)
        return 1
    except AMIError as exc:
        print(f"AMI error / AMI 错误: {exc}", file=sys.stderr)
        return 1
    for obj in incoming_to_json(result):
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    response = result.response if isinstance(result, EventList) else result
    return 0 if response.success else 1


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
    snd = ami_sub.add_parser(
        "send",
        help="log in, send one action, print the reply as JSON lines / 发送一个 AMI 操作并打印回复",
    )
    snd.add_argument("action", help="action name, e.g. QueueStatus / 操作名")
    snd.add_argument("fields", nargs="*", help="Name=value (repeat a name for a list) / 字段")
    snd.add_argument("--host", default="127.0.0.1", help="AMI host / 主机")
    snd.add_argument("--port", type=int, default=5038, help="AMI port / 端口")
    snd.add_argument("--user", default="ivr", help="manager user / 用户名")
    snd.add_argument("--secret-file", metavar="FILE",
                     help="file holding the secret (default: $IVR_AMI_SECRET_FILE, else "
                          "$IVR_AMI_SECRET) / 密码文件")
    snd.add_argument("--secret", help=argparse.SUPPRESS)  # refused with a message
    snd.add_argument("--plain", action="store_true",
                     help="plain login instead of MD5 challenge / 明文登录")
    snd.add_argument("--timeout", type=float, default=10.0,
                     help="seconds for connect and for the reply / 超时秒数")
    snd.set_defaults(func=_send)
