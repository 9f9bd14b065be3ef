"""Voice prompts over the HTTP API (admins): upload a recording and import it, check the
prompts directory.

``PUT /api/prompts/{language}/{name}`` takes the audio as the raw body (any format
ffmpeg reads) or as the ``file`` part of a ``multipart/form-data`` form, at most
:data:`MAX_UPLOAD` bytes (more: 413, counted while it streams to a temporary file, never
held whole in memory), and imports it exactly as ``ivr prompts import`` does
(:func:`ivr.prompts.admin.import_prompt`: 8 kHz mono 16-bit WAV, level-normalised,
written atomically into ``[paths] prompts_dir``, recorded in the manifest as a human
recording).  ``GET /api/prompts/check`` is ``ivr prompts check --json``.  The routes
live here, not in ivr/prompts, because the API imports the dialplan toolchain, which
imports ivr/prompts (no package cycle); the document's part is ``prompts.openapi.json``.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import weakref
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from ivr.api.errors import BadRequest, PayloadTooLarge, Unavailable, split_message
from ivr.api.http import API, TARGET, document_fragment, json_response, route
from ivr.prompts.admin import import_prompt
from ivr.prompts.catalog import load_catalog, valid_language, valid_name
from ivr.prompts.convert import DEFAULT_PEAK_DBFS, Converted
from ivr.prompts.errors import PromptError
from ivr.prompts.library import ERROR, check_prompts
from ivr.prompts.manifest import SYNTHETIC, load_manifest

document_fragment("ivr.api", "prompts.openapi.json")

MAX_UPLOAD = 32 * 1024 * 1024
"""A prompt is at most 120 s (ivr.prompts.convert.MAX_PROMPT_SECONDS): 120 s of 48 kHz
stereo 16-bit WAV is 23 MB."""
CHUNK = 64 * 1024
_ORIGINAL_RE = re.compile(r"[^A-Za-z0-9._-]+")

_locks: weakref.WeakKeyDictionary[web.Application, asyncio.Lock] = (
    weakref.WeakKeyDictionary())


def _prompts_dir(request: web.Request) -> Path:
    folder = request.app[API].sources.prompts_dir
    if folder is None or not folder.is_dir():
        raise Unavailable("no prompts directory here ([paths] prompts_dir)",
                          "未配置提示音目录（[paths] prompts_dir）",
                          code="prompts_unavailable")
    return folder


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"the recording is over {MAX_UPLOAD // (1024 * 1024)} MiB: "
                           "nothing imported",
                           f"录音超过 {MAX_UPLOAD // (1024 * 1024)} MiB：未导入")


def _level(request: web.Request, key: str, default: float | None) -> float | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise BadRequest(f"{key} must be a number of dBFS, not {raw!r}",
                         f"{key} 必须是 dBFS 数值，而不是 {raw!r}",
                         code="invalid_level") from None


def _original(filename: str | None, content_type: str) -> str:
    """A safe file name for the upload (ffmpeg probes the content; the name is what the
    manifest records as the original)."""
    name = Path(filename or "").name
    name = _ORIGINAL_RE.sub("_", name).strip("._")[:100]
    if not name:
        sub = content_type.split("/", 1)[-1].split(";")[0].strip()
        ext = "" if sub == "octet-stream" else _ORIGINAL_RE.sub("", sub)[:10]
        name = "upload." + (ext or "bin")
    return name


async def _save(chunks: Any, target: Path) -> int:
    """Stream ``chunks`` (an async iterator of bytes) into ``target``; 413 past the
    limit."""
    size = 0
    with target.open("wb") as out:
        async for chunk in chunks:
            size += len(chunk)
            if size > MAX_UPLOAD:
                raise _too_large()
            out.write(chunk)
    return size


async def _raw(request: web.Request) -> Any:
    while chunk := await request.content.read(CHUNK):
        yield chunk


async def _part(part: BodyPartReader) -> Any:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def _receive(request: web.Request, folder: Path) -> Path:
    """The uploaded recording, written to a file in ``folder``."""
    if request.content_length is not None and request.content_length > MAX_UPLOAD:
        raise _too_large()
    ctype = request.headers.get("Content-Type", "application/octet-stream")
    if ctype.startswith("multipart/"):
        try:
            reader = await request.multipart()
            async for part in reader:
                if isinstance(part, BodyPartReader) and part.name == "file":
                    path = folder / _original(part.filename, part.headers.get(
                        "Content-Type", "application/octet-stream"))
                    size = await _save(_part(part), path)
                    break
            else:
                raise BadRequest("the form has no 'file' part", "表单中没有 file 部分",
                                 code="invalid_upload")
        except (ValueError, AssertionError) as exc:  # a malformed multipart body
            raise BadRequest(f"malformed multipart body: {exc}",
                             f"multipart 请求体格式错误：{exc}", code="invalid_upload") from None
    else:
        path = folder / _original(None, ctype)
        size = await _save(_raw(request), path)
    if size == 0:
        raise BadRequest("the upload is empty: send the recording as the body or as the "
                         "form's 'file'", "上传内容为空：请在请求体或表单 file 中发送录音",
                         code="invalid_upload")
    return path


@route("PUT", "/api/prompts/{language}/{name}", "prompts.import", audit="prompts.import")
async def upload(request: web.Request) -> web.StreamResponse:
    """Import a recording as prompt ``name`` in ``language`` (replacing what was there),
    as ``ivr prompts import`` does."""
    language, name = request.match_info["language"], request.match_info["name"]
    request[TARGET] = f"{language}/{name}"
    prompts_dir = _prompts_dir(request)
    if not valid_language(language):
        raise BadRequest(f"invalid language {language!r} (e.g. zh, yue, en): nothing "
                         "imported", f"语言代码 {language!r} 无效：未导入",
                         code="invalid_prompt")
    if not valid_name(name):
        raise BadRequest(f"invalid prompt name {name!r} (lower-case letters, digits and '-'): "
                         "nothing imported", f"提示音名称 {name!r} 无效：未导入",
                         code="invalid_prompt")
    peak = _level(request, "peak_dbfs", DEFAULT_PEAK_DBFS)
    assert peak is not None
    max_rms = _level(request, "max_rms_dbfs", None)
    lock = _locks.setdefault(request.app, asyncio.Lock())
    with tempfile.TemporaryDirectory(prefix="ivr-api-prompt-") as tmp:
        source = await _receive(request, Path(tmp))
        async with lock:  # one import at a time: each rewrites the manifest
            try:
                result: Converted = await asyncio.to_thread(
                    import_prompt, prompts_dir, source, name, language, peak, max_rms)
            except PromptError as exc:  # not audio, silent, too long, a level out of range
                en, zh = split_message(str(exc).replace(str(source), source.name))
                raise BadRequest(f"{en}: nothing imported", f"{zh}：未导入",
                                 code="invalid_audio") from None
    return json_response({
        "language": language, "name": name, "file": f"{language}/{name}.wav",
        "original": source.name, "duration_ms": result.duration_ms,
        "peak_dbfs": round(result.peak_dbfs, 2), "rms_dbfs": round(result.rms_dbfs, 2),
        "gain_db": round(result.gain_db, 2)})


def _check(prompts_dir: Path, languages: list[str]) -> dict[str, Any]:
    try:
        catalog = load_catalog(prompts_dir)
        manifest = load_manifest(prompts_dir)
    except PromptError as exc:
        en, zh = split_message(str(exc))
        raise Unavailable(f"the prompts catalog or manifest is unreadable: {en}",
                          f"提示音目录或清单无法读取：{zh}",
                          code="prompts_catalog_invalid") from None
    unknown = [lang for lang in languages if lang not in catalog.languages]
    if unknown:
        raise BadRequest(f"language(s) not in the catalog: {', '.join(unknown)}",
                         f"目录中没有这些语言：{', '.join(unknown)}", code="invalid_language")
    languages = languages or list(catalog.enabled_languages())
    problems = check_prompts(prompts_dir, catalog.names, languages, catalog.chains())
    synthetic = sorted(k for k, e in manifest.entries.items()
                       if e.source == SYNTHETIC and k.split("/")[0] in languages)
    errors = sum(p.severity == ERROR for p in problems)
    return {"ok": errors == 0, "errors": errors, "warnings": len(problems) - errors,
            "languages": languages, "synthetic": synthetic,
            "problems": [{"severity": p.severity, "kind": p.kind, "name": p.name,
                          "language": p.language, "message": p.message} for p in problems]}


@route("GET", "/api/prompts/check", "prompts.read")
async def check(request: web.Request) -> web.StreamResponse:
    """Missing prompts and files Asterisk would not play (``ivr prompts check``), for the
    catalog's languages or ``?lang=…`` (repeatable)."""
    prompts_dir = _prompts_dir(request)
    return json_response(await asyncio.to_thread(
        _check, prompts_dir, request.query.getall("lang", [])))
