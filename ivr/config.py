"""Bridge settings: a TOML file (``--config``/``$IVR_CONFIG``) and the environment.

Precedence: environment variables over the file over defaults.  Secrets (the AMI
secret, the ticket signature secret) have no default in code: a command that needs
one and does not get it stops with a message naming the setting.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ivr.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Settings:
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "ivr"
    ami_secret: str = ""
    # After each login, ask Asterisk (AMI ``Filter``) for only the events the bridge
    # consumes; off = every event (e.g. an AMI user without the ``system`` privilege).
    ami_event_filter: bool = True
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    redis_url: str = ""
    # The event pipeline's own settings (ticket backend URL, signature secret, streams)
    # are read by ivr.events.config from the same environment (IVR_TICKET_URL, …).
    dialplans_dir: Path = ROOT / "dialplans"
    prompts_dir: Path = ROOT / "prompts"
    asterisk_conf_dir: Path = ROOT / "asterisk-conf"

    def require(self, *names: str) -> None:
        """Raise ConfigError naming every required setting that is empty."""
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            env = ", ".join(f"IVR_{n.upper()}" for n in missing)
            raise ConfigError(
                f"missing setting(s) {', '.join(missing)} (set {env} or the config file) / "
                f"缺少配置项 {', '.join(missing)}"
            )


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _coerce(name: str, kind: Any, value: Any, where: str) -> Any:
    if kind is bool or kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ConfigError(f"{where}: setting {name!r} must be yes or no: {value!r}")
    try:
        if kind is int or kind == "int":
            return int(value)
        if kind is Path or kind == "Path":
            return Path(str(value)).expanduser()
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: setting {name!r} must be {kind}: {value!r}") from exc


def load_settings(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    env = os.environ if env is None else env
    settings = Settings()
    types = {f.name: f.type for f in fields(Settings)}
    path = path or env.get("IVR_CONFIG") or None
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {p} / 找不到配置文件") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: {exc}") from exc
        section = data.get("ivr", data)
        unknown = sorted(set(section) - set(types))
        if unknown:
            raise ConfigError(f"{p}: unknown setting(s): {', '.join(unknown)} / 未知配置项")
        settings = replace(
            settings, **{k: _coerce(k, types[k], v, str(p)) for k, v in section.items()}
        )
    overrides = {}
    for name, kind in types.items():
        value = env.get(f"IVR_{name.upper()}")
        if value is not None:
            overrides[name] = _coerce(name, kind, value, f"$IVR_{name.upper()}")
    return replace(settings, **overrides)
