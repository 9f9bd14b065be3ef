"""``ivr prompts …``: import recordings, build synthetic placeholders, check."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ivr.prompts.admin import build_prompts, import_prompt
from ivr.prompts.catalog import load_catalog
from ivr.prompts.errors import PromptError
from ivr.prompts.library import ERROR, check_prompts
from ivr.prompts.manifest import SYNTHETIC, load_manifest


def default_dir() -> str:
    return os.environ.get("IVR_PROMPTS_DIR", "prompts")


def _import(args: argparse.Namespace) -> int:
    try:
        res = import_prompt(Path(args.dir), Path(args.file), args.name, args.lang,
                            peak_dbfs=args.peak_dbfs, max_rms_dbfs=args.max_rms_dbfs)
    except PromptError as exc:
        print(f"error / 错误: {exc}", file=sys.stderr)
        return 1
    print(f"imported / 已导入 {args.lang}/{args.name}.wav: {res.duration_ms} ms, "
          f"peak {res.peak_dbfs:.1f} dBFS, gain {res.gain_db:+.1f} dB")
    return 0


def _build(args: argparse.Namespace) -> int:
    prompts_dir = Path(args.dir)
    try:
        catalog = load_catalog(prompts_dir)
        res = build_prompts(prompts_dir, catalog, args.lang or None, force=args.force)
    except PromptError as exc:
        print(f"error / 错误: {exc}", file=sys.stderr)
        return 1
    for key in res.built:
        print(f"built / 已合成 {key}")
    for why in res.failed:
        print(f"error / 错误: {why}", file=sys.stderr)
    print(f"{len(res.built)} built, {len(res.skipped_human)} human recordings kept, "
          f"{len(res.no_text)} without text, {len(res.failed)} failed")
    return 1 if res.failed else 0


def _check(args: argparse.Namespace) -> int:
    prompts_dir = Path(args.dir)
    try:
        catalog = load_catalog(prompts_dir)
        manifest = load_manifest(prompts_dir)
    except PromptError as exc:
        print(f"error / 错误: {exc}", file=sys.stderr)
        return 1
    languages = args.lang or list(catalog.enabled_languages())
    problems = check_prompts(prompts_dir, catalog.names, languages, catalog.chains())
    synthetic = sorted(k for k, e in manifest.entries.items()
                       if e.source == SYNTHETIC and k.split("/")[0] in languages)
    errors = sum(p.severity == ERROR for p in problems)
    if args.json:
        print(json.dumps({
            "problems": [{"severity": p.severity, "kind": p.kind, "name": p.name,
                          "language": p.language, "message": p.message} for p in problems],
            "synthetic": synthetic,
        }, ensure_ascii=False, indent=1))
    else:
        for p in problems:
            print(p)
        for key in synthetic:
            print(f"info: {key}: synthetic placeholder (espeak-ng) / 合成占位提示音")
        print(f"{errors} errors, {len(problems) - errors} warnings, "
              f"{len(synthetic)} synthetic, languages: {', '.join(languages)}")
    return 1 if errors else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prompts", help="voice prompts: import, build, check / 语音提示音管理")
    ps = p.add_subparsers(dest="prompts_command", metavar="SUBCOMMAND", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--dir", default=default_dir(),
                       help="prompts dir (default $IVR_PROMPTS_DIR or ./prompts) / 提示音目录")

    imp = ps.add_parser(
        "import", help="convert a recording (mp3, wav, ogg…) to an Asterisk prompt / 导入录音")
    imp.add_argument("file", help="audio file / 音频文件")
    imp.add_argument("--name", required=True, help="prompt name, e.g. welcome / 提示音名称")
    imp.add_argument("--lang", required=True, help="language: zh, yue, en… / 语言")
    imp.add_argument("--peak-dbfs", type=float, default=-3.0,
                     help="peak level after normalisation (default -3) / 归一化峰值电平")
    imp.add_argument("--max-rms-dbfs", type=float, default=None,
                     help="cap the RMS loudness, e.g. -16 (default: none) / 限制 RMS 响度")
    common(imp)
    imp.set_defaults(func=_import)

    bld = ps.add_parser(
        "build", help="synthesise missing prompts with espeak-ng / 用 espeak-ng 合成缺失的提示音")
    bld.add_argument("--lang", action="append", help="only this language (repeatable) / 语言")
    bld.add_argument("--force", action="store_true",
                     help="re-synthesise synthetic prompts too / 重新合成已有的合成提示音")
    common(bld)
    bld.set_defaults(func=_build)

    chk = ps.add_parser(
        "check", help="report missing prompts and wrong formats / 检查缺失和格式错误的提示音")
    chk.add_argument("--lang", action="append", help="only this language (repeatable) / 语言")
    chk.add_argument("--json", action="store_true", help="JSON output / JSON 输出")
    common(chk)
    chk.set_defaults(func=_check)
