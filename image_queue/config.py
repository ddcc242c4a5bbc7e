"""image_queue.toml, built-in provider presets and API keys (CONTRACT.md §8).

Precedence, resolved here and only here: CLI flag > tasks file > image_queue.toml > preset.
Keys are read from the environment variable a provider names (or a 0600 file the user names);
they are never taken from a tasks file or a command line, and never written anywhere.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from image_queue.errors import ConfigError
from image_queue.keys import mask_secret, read_api_key  # noqa: F401  (re-exported)

DEFAULT_CONFIG_FILE = "image_queue.toml"


class ProviderConfig(BaseModel):
    """One `[providers.NAME]` table. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    kind: str
    base_url: str | None = None
    api_key_env: str | None = None
    api_key_file: str | None = None
    model: str | None = None
    request_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)
    connect_timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    headers: dict[str, str] = Field(default_factory=dict)
    paths: dict[str, str] = Field(default_factory=dict)
    images_per_minute: float | None = Field(default=None, gt=0, le=100000)
    rate_window_seconds: float = Field(default=60.0, gt=0, le=3600)  # what images_per_minute counts over
    response_format: str | None = None  # sent only when set (GPT image models reject it)
    poll_interval_seconds: float = Field(default=5.0, gt=0, le=600)
    poll_timeout_seconds: float = Field(default=900.0, gt=0, le=86400)
    max_download_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    stream: bool = False
    options: dict[str, Any] = Field(default_factory=dict)  # kind-specific extras

    def public(self) -> dict[str, Any]:
        """The config as it may be shown or persisted: no key material, only the variable's name."""
        return self.model_dump(exclude_none=True)


PRESETS: dict[str, dict[str, Any]] = {
    "mock": {"kind": "mock", "model": "mock-image-1"},
    "openai": {
        "kind": "openai-images",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "OPENAI_API_KEY",
        "model": "gpt-image-2",
    },
    "openai-responses": {
        "kind": "openai-responses",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "OPENAI_API_KEY",
        "model": "gpt-5.4",
    },
    "image2": {
        "kind": "image2",
        "base_url": "https://api.kexiangai.com",
        "api_key_env": "IMAGE2_API_KEY",
        "model": "GPT-Image-2",
    },
    "runapi": {
        "kind": "runapi",
        "base_url": "https://runapi.ai",
        "api_key_env": "RUNAPI_API_KEY",
        "model": "gpt-image-2",
    },
}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_provider: str = "mock"
    providers: dict[str, ProviderConfig]
    source: str | None = None

    def provider(self, name: str | None) -> ProviderConfig:
        name = name or self.default_provider
        try:
            return self.providers[name]
        except KeyError:
            raise ConfigError(
                f"unknown provider {name!r}; configured providers: {', '.join(sorted(self.providers))}"
                + (f" (from {self.source})" if self.source else "")
            ) from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read image_queue.toml (the named file, else ./image_queue.toml if present) over the presets."""
    explicit = path is not None
    file = Path(path) if path is not None else Path(DEFAULT_CONFIG_FILE)
    data: dict[str, Any] = {}
    if explicit or file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {file}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file} is not valid TOML: {exc}") from None
    unknown = set(data) - {"defaults", "providers"}
    if unknown:
        raise ConfigError(f"{file}: unknown top-level table(s) {sorted(unknown)}; expected [defaults] and [providers.NAME]")
    defaults = data.get("defaults", {})
    if set(defaults) - {"provider"}:
        raise ConfigError(f"{file}: [defaults] takes only 'provider', not {sorted(set(defaults) - {'provider'})}")
    providers: dict[str, ProviderConfig] = {}
    tables = {name: dict(preset) for name, preset in PRESETS.items()}
    for name, table in (data.get("providers") or {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: [providers.{name}] must be a table")
        base = PRESETS.get(table.get("kind", ""), {}) if name not in PRESETS else PRESETS[name]
        if "kind" in table and table["kind"] != base.get("kind"):
            base = next((p for p in PRESETS.values() if p["kind"] == table["kind"]), {})
        tables[name] = {**base, **table}
    for name, table in tables.items():
        try:
            providers[name] = ProviderConfig.model_validate({**table, "name": name})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{file}: [providers.{name}] {where}: {err['msg']}") from None
    default = defaults.get("provider", "mock")
    if default not in providers:
        raise ConfigError(f"{file}: [defaults] provider {default!r} is not configured")
    return Config(default_provider=default, providers=providers, source=str(file) if data else None)
