"""The pool token's file: where a stack leaves it and where its user's programs find it.

`taskmaster up`, `taskmaster demo` and a notebook's own stack generate a pool token when
TASKMASTER_POOL_TOKEN is not set, and write it to an owner-only file named after the
address the stack answers on: $XDG_CONFIG_HOME/taskmaster/pool-tokens/local-8081 (or
~/.config/...). A stack on this machine answers on several names (127.0.0.1, localhost,
::1, the machine's name and addresses): all of them find the same file. The CLI, the
notebooks' client and the panels look the file up by the URL they use, from any folder;
another user cannot read it, and a web page cannot read files at all.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import re
import secrets
import socket
from pathlib import Path
from urllib.parse import urlsplit

POOL_TOKEN_HEADER = "X-TaskMaster-Pool-Token"
_UNSAFE = re.compile(r"[^a-z0-9._-]")


def new_token() -> str:
    """A fresh 256-bit secret, URL-safe."""
    return secrets.token_urlsafe(32)


def token_dir() -> Path:
    """$XDG_CONFIG_HOME/taskmaster/pool-tokens (default ~/.config/taskmaster/pool-tokens)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "taskmaster" / "pool-tokens"


@functools.cache
def _local_names() -> frozenset[str]:
    names = {"localhost", "0.0.0.0", "::", ""}
    host = socket.gethostname().lower()
    names |= {host, host.split(".", 1)[0]}
    with contextlib.suppress(OSError):
        names |= {str(info[4][0]).lower() for info in socket.getaddrinfo(host, None)}
    return frozenset(names)


def _is_local(host: str) -> bool:
    if host in _local_names() or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def stack_key(url: str) -> str:
    """The file name of a stack's token: local-<port> for every name of this machine,
    else <host>-<port>."""
    parts = urlsplit(url if "//" in url else f"http://{url}")
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    where = "local" if _is_local(host) else _UNSAFE.sub("_", host)
    return f"{where}-{port}"


def token_path(url: str) -> Path:
    """The token file of the stack answering at url."""
    return token_dir() / stack_key(url)


def write_pool_token(url: str, token: str) -> Path:
    """Write the token, readable by its owner only (0600 in a 0700 folder), atomically."""
    path = token_path(url)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    tmp.replace(path)
    return path


def find_pool_token(url: str) -> str:
    """The token the stack at url left for its user ("" when there is none)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return token_path(url).read_text().strip()
    return ""


def remove_pool_token(url: str, token: str) -> None:
    """Remove the token file if it still holds this token (another stack may own it now)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        path = token_path(url)
        if path.read_text().strip() == token:
            path.unlink()
