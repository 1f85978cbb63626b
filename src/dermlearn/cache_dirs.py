"""Where dermlearn keeps its on-disk caches (features, decoded images)."""
from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(name: str, env_var: str) -> Path:
    """``$env_var`` if set, else ``$XDG_CACHE_HOME/dermlearn/name`` (``~/.cache`` by default)."""
    env = os.environ.get(env_var, "").strip()
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or "~/.cache"
    return Path(base).expanduser() / "dermlearn" / name
