"""The server's settings: the core :class:`~featscope.config.Settings` plus auth and upload limits."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from featscope.config import Settings


class ServerSettings(Settings):
    """``FEATSCOPE_*`` settings the REST API adds (token, allowed roots, upload limits)."""

    token: str | None = Field(
        default=None,
        description="API token; when set every API request needs `Authorization: Bearer TOKEN` or the login "
                    "cookie. Required to bind anything but loopback.",
    )
    allowed_roots: list[Path] = Field(
        default_factory=list,
        description="Folders data sets and weights may be added from through the API (JSON list in the env, "
                    'e.g. FEATSCOPE_ALLOWED_ROOTS=\'["/data"]\'); empty: none.',
    )
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1, description="Largest accepted upload, in bytes.")
    max_upload_pixels: int = Field(default=40_000_000, ge=1, description="Largest accepted upload, in pixels (w x h).")
    thumbnail_max: int = Field(default=512, ge=16, le=2048, description="Largest thumbnail edge the API serves.")

    @field_validator("token")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v or None

    @field_validator("allowed_roots")
    @classmethod
    def _resolve_roots(cls, v: list[Path]) -> list[Path]:
        return [Path(p).expanduser().resolve() for p in v]

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def thumbs_dir(self) -> Path:
        return self.data_dir / "thumbnails"


def server_settings(settings: Settings | None = None) -> ServerSettings:
    """``settings`` as :class:`ServerSettings` (server fields read from the environment when it is a plain Settings)."""
    if isinstance(settings, ServerSettings):
        return settings
    if settings is None:
        return ServerSettings()
    return ServerSettings(**{**ServerSettings().model_dump(exclude=set(Settings.model_fields)),
                             **settings.model_dump()})
