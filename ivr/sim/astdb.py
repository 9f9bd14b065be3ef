"""Asterisk's internal database (astdb: ``DBPut``/``DBGet``/``DBDel``, app_queue's
persistent members), optionally kept in a file so it survives an emulated Asterisk
restart as ``astdb.sqlite3`` does: a new emulator given the same file starts with it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Astdb(dict[tuple[str, str], str]):
    """(family, key) → value; every change is written to ``path`` when one is given."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        self.path = path
        if path is not None and path.exists():
            for fam, key, val in json.loads(path.read_text(encoding="utf-8")):
                super().__setitem__((str(fam), str(key)), str(val))

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps([[f, k, v] for (f, k), v in sorted(self.items())],
                                  ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.path)

    def __setitem__(self, key: tuple[str, str], value: str) -> None:
        super().__setitem__(key, value)
        self._save()

    def __delitem__(self, key: tuple[str, str]) -> None:
        super().__delitem__(key)
        self._save()

    def pop(self, key: tuple[str, str], default: Any = None) -> Any:
        found = key in self
        value = super().pop(key, default)
        if found:
            self._save()
        return value

    def family(self, family: str) -> dict[str, str]:
        """The keys of ``family`` (``ast_db_gettree``) and their values."""
        return {k: v for (f, k), v in self.items() if f == family}
