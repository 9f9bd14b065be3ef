"""``ivr tokens create|list|revoke``: the HTTP API's tokens (docs/api.md).

``create`` prints the token once (only its hash is stored, in Redis ``[redis] url``);
``list`` shows id, role, agent, name and creation time (never a secret); ``revoke ID``
deletes it — requests with it are refused from then on."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys

from ivr.api.auth import ROLES, TokenInputError, TokenStore
from ivr.config import load_settings
from ivr.errors import IvrError
from ivr.redisconn import connect as redis_connect


async def _with_store(args: argparse.Namespace) -> int:
    settings = load_settings(args.config).require("redis_url")
    r = redis_connect(settings.redis_url)
    try:
        store = TokenStore(r, args.prefix)
        if args.tokens_command == "create":
            token, info = await store.create(args.role, name=args.name or "", agent=args.agent)
            print(token)
            print(f"id {info.id}  role {info.role}"
                  + (f"  agent {info.agent}" if info.agent else "")
                  + "  (shown once: keep it secret / 令牌仅显示一次，请妥善保存)",
                  file=sys.stderr)
            return 0
        if args.tokens_command == "revoke":
            if await store.revoke(args.id):
                print(f"revoked {args.id} / 已吊销")
                return 0
            print(f"no token {args.id!r} / 令牌 {args.id!r} 不存在", file=sys.stderr)
            return 1
        tokens = await store.list()
        if args.json:
            print(json.dumps([t.to_json() for t in tokens], ensure_ascii=False))
        else:
            for t in tokens:
                when = dt.datetime.fromtimestamp(t.created, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
                print(f"{t.id}  {t.role:<10} {t.agent or '-':<20} {when}  {t.name}")
        return 0
    finally:
        await r.aclose()


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_with_store(args))
    except TokenInputError as exc:
        print(f"ivr tokens: {exc}", file=sys.stderr)
        return 2
    except IvrError as exc:
        print(f"ivr tokens: {exc}", file=sys.stderr)
        return 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tokens", help="HTTP API tokens: create, list, revoke / API 令牌管理")
    p.add_argument("--config", default=None, help="settings file (TOML) / 配置文件")
    p.add_argument("--prefix", default="ivr:api", help=argparse.SUPPRESS)
    tsub = p.add_subparsers(dest="tokens_command", metavar="SUBCOMMAND", required=True)
    c = tsub.add_parser("create", help="create a token (printed once) / 创建令牌")
    c.add_argument("--role", required=True, choices=ROLES)
    c.add_argument("--agent", default=None, metavar="INTERFACE",
                   help="the agent's interface, e.g. PJSIP/1001 (role agent) / 坐席接口")
    c.add_argument("--name", default="", help="who holds it / 持有人")
    r = tsub.add_parser("revoke", help="revoke a token by id / 吊销令牌")
    r.add_argument("id")
    ls = tsub.add_parser("list", help="list tokens (no secrets) / 列出令牌")
    ls.add_argument("--json", action="store_true")
    p.set_defaults(func=_run)
