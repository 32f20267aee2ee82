"""The Lua scripts, read once from the package data.

The ``.lua`` files live in the repository's top-level ``lua/`` and are read one way, as the
package's ``redis_ckpt/lua`` with ``importlib.resources``: the wheel ships them there, and in
a checkout (or an editable install) ``redis_ckpt/lua`` is a symlink to ``../lua``. A line
``-- include: <part>`` in a script stands for the text of ``lua/parts/<part>.lua`` (code two
scripts share; Redis has no include of its own), put in its place when the script is read.

Scripts are run by EVALSHA with a reload on NOSCRIPT, exactly as redis-py's
``register_script`` does; the store pipelines EVALSHA with WAITAOF on one connection, so
the SHA is computed here (SHA1 of the source, as Redis does) and ``resp`` does the reload.
"""

from __future__ import annotations

import hashlib
import re
from functools import cached_property
from importlib import resources

__all__ = ["Scripts", "SCRIPTS", "SCRIPT_NAMES", "lua_text"]

SCRIPT_NAMES = (
    "acquire", "renew", "release", "commit", "revoke", "delete", "load", "retain", "prune",
    "saver_write", "saver_read", "saver_admin",
)


_INCLUDE = re.compile(r"^-- include: ([a-z_]+)\n", re.MULTILINE)


def _read(*path: str) -> str:
    script = resources.files("redis_ckpt").joinpath("lua", *path)
    if not script.is_file():
        raise FileNotFoundError(f"Lua script {'/'.join(path)} is missing from the redis_ckpt package (a broken install?)")
    return script.read_text(encoding="utf-8")


def lua_text(name: str) -> str:
    """The source of ``lua/<name>.lua``, from the package, its includes put in place."""
    return _INCLUDE.sub(lambda m: _read("parts", f"{m.group(1)}.lua"), _read(f"{name}.lua"))


class Scripts:
    """Name -> (source, sha1). One instance serves every client, sync and async."""

    @cached_property
    def _sources(self) -> dict[str, str]:
        return {name: lua_text(name) for name in SCRIPT_NAMES}

    @cached_property
    def _shas(self) -> dict[str, str]:
        return {n: hashlib.sha1(s.encode("utf-8")).hexdigest() for n, s in self._sources.items()}

    def source(self, name: str) -> str:
        return self._sources[name]

    def sha(self, name: str) -> str:
        return self._shas[name]


SCRIPTS = Scripts()
