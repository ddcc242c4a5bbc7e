"""API keys: read from the environment variable (or 0600 file) a provider names, and masked for
display. Free of pydantic, so workers can read their key without importing the config models."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from image_queue.errors import ConfigError, MissingKeyError


def read_api_key(config: Any, environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The provider's key from its environment variable or key file; MissingKeyError if absent."""
    if config.kind == "mock":
        return None
    if config.api_key_file:
        path = Path(config.api_key_file).expanduser()
        try:
            st = path.stat()
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(f"key file {path} for provider {config.name!r} must be private (chmod 600)")
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read key file {path} for provider {config.name!r}: {exc.strerror}") from None
        if not key:
            raise MissingKeyError(f"key file {path} for provider {config.name!r} is empty")
        return key
    if not config.api_key_env:
        return None
    key = environ.get(config.api_key_env, "").strip()
    if not key:
        raise MissingKeyError(
            f"provider {config.name!r} needs an API key: set the environment variable {config.api_key_env}"
        )
    return key


def mask_secret(value: str) -> str:
    """'sk-abc…wxyz' style: enough to tell keys apart, never enough to use one."""
    if len(value) <= 8:
        return "…"
    return f"{value[:3]}…{value[-4:]}"
