"""One Settings class over bot.toml and COSIGN_<SECTION>__<KEY> environment overrides.

Nothing else in cosign reads ``os.environ``: secrets (Slack and Matrix tokens) are read here too,
kept as ``SecretStr`` so they never reach a log line by accident.
"""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

DEFAULT_CONFIG_PATH = Path("bot.toml")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class ConfigError(Exception):
    """A bad configuration: the message names the key."""


def parse_duration(text: str) -> timedelta:
    """Parse '24h', '30m', '3d', '45s' (used by reminders and relative deadlines)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration like 30m, 2h or 3d: {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    url: str = "sqlite:///cosign.db"

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not (value.startswith("sqlite") or value.startswith("postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return value


Visibility = Literal["public", "counts", "private"]


class LettersSettings(_Section):
    timezone: str = "UTC"
    output_dir: Path = Path("out")
    # What members see of who signed (DESIGN.md §8): public | counts | private. The older
    # `public_signatories` still works when visibility is not given (true: public, false: counts).
    visibility: Visibility = "public"
    public_signatories: bool = True
    proxy: Literal["direct", "confirm"] = "direct"  # staff signatures (DESIGN.md §8)
    send_copies: bool = True  # each signatory gets the published PDF by direct message (§10)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @model_validator(mode="after")
    def _one_visibility(self) -> LettersSettings:
        """`public_signatories` alone sets the visibility; both given and disagreeing is a
        mistake worth stopping for, not a silent pick."""
        if "public_signatories" not in self.model_fields_set:
            return self
        implied: Visibility = "public" if self.public_signatories else "counts"
        if "visibility" not in self.model_fields_set:
            self.visibility = implied
        elif self.visibility != implied:
            raise ValueError(
                f"visibility = {self.visibility!r} contradicts public_signatories = "
                f"{str(self.public_signatories).lower()}; keep only visibility"
            )
        return self

    @property
    def default_visibility(self) -> Visibility:
        """The visibility of a letter whose front matter does not say (fixed when posted)."""
        return self.visibility


class SchedulerSettings(_Section):
    tick_seconds: float = Field(default=5, gt=0, le=3600)
    reminders: list[str] = Field(default_factory=lambda: ["24h", "1h"])
    dm_reminders: bool = True  # also each member who has not signed, by direct message (§8)

    @field_validator("reminders")
    @classmethod
    def _durations(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_duration(item)
        return value

    @property
    def reminder_offsets(self) -> list[tuple[str, timedelta]]:
        """Offsets before the deadline, largest first."""
        pairs = [(label, parse_duration(label)) for label in self.reminders]
        return sorted(pairs, key=lambda pair: pair[1], reverse=True)


class CoordinatorsSettings(_Section):
    console: list[str] = Field(default_factory=lambda: ["coordinator"])
    slack: list[str] = Field(default_factory=list)
    matrix: list[str] = Field(default_factory=list)
    announce: list[str] = Field(default_factory=list)

    @field_validator("announce")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        for target in value:
            platform, _, channel = target.partition(":")
            if platform not in ("console", "slack", "matrix") or not channel:
                raise ValueError(f"{target!r} is not PLATFORM:CHANNEL (console, slack or matrix)")
        return value

    def for_platform(self, platform: str) -> list[str]:
        return list(getattr(self, platform, []) or [])


PAGE_SIZES = {"a4": "A4", "letter": "Letter"}
LETTERHEAD_SUFFIXES = (".typ", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")


class OutputSettings(_Section):
    """How the PDF is laid out (DESIGN.md §10): paper, a letterhead, extra fonts."""

    page_size: str = "A4"
    letterhead: Path | None = None
    fonts: list[Path] = Field(default_factory=list)

    @field_validator("page_size")
    @classmethod
    def _page_size(cls, value: str) -> str:
        try:
            return PAGE_SIZES[value.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown page size {value!r}; use A4 or Letter") from None

    @field_validator("letterhead", mode="before")
    @classmethod
    def _letterhead(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # "" in bot.toml: no letterhead
        path = Path(str(value))
        if path.suffix.lower() not in LETTERHEAD_SUFFIXES:
            raise ValueError(
                f"{path} is not a Typst file or an image ({', '.join(LETTERHEAD_SUFFIXES)})"
            )
        if not path.is_file():
            raise ValueError(f"file not found: {path}")
        return path

    @field_validator("fonts")
    @classmethod
    def _fonts(cls, value: list[Path]) -> list[Path]:
        for path in value:
            if path.suffix.lower() not in FONT_SUFFIXES:
                raise ValueError(f"{path} is not a font file ({', '.join(FONT_SUFFIXES)})")
            if not path.is_file():
                raise ValueError(f"font file not found: {path}")
        return value


class ConsoleSettings(_Section):
    enabled: bool = True


class SlackSettings(_Section):
    enabled: bool = False
    mode: Literal["socket", "http"] = "socket"
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=0, le=65535)
    path: str = "/slack/events"
    api_url: str = ""
    match_email: bool = False
    # How long a command may run before Slack gets its acknowledgement without the answer (which
    # then follows through response_url). Slack allows 3 s for the acknowledgement.
    answer_within: float = Field(default=1.0, ge=0.0, le=2.0)

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if value and not (value.startswith("http") and value.endswith("/")):
            raise ValueError("must be an http(s) URL ending in '/' (e.g. https://slack.com/api/)")
        return value


class MatrixSettings(_Section):
    enabled: bool = False
    homeserver: str = "https://matrix.example.org"
    user_id: str = "@cosign:example.org"
    device_id: str = "COSIGN"
    store_path: Path = Path("matrix-store")
    encryption: bool = True
    allowed_inviters: list[str] = Field(default_factory=list)


class Secrets(BaseSettings):
    """Platform secrets, only from the environment (never from bot.toml)."""

    model_config = SettingsConfigDict(extra="ignore")

    slack_bot_token: SecretStr | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(
        default=None, validation_alias="SLACK_SIGNING_SECRET"
    )
    slack_app_token: SecretStr | None = Field(default=None, validation_alias="SLACK_APP_TOKEN")
    matrix_access_token: SecretStr | None = Field(
        default=None, validation_alias="MATRIX_ACCESS_TOKEN"
    )
    matrix_password: SecretStr | None = Field(default=None, validation_alias="MATRIX_PASSWORD")
    matrix_pickle_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MATRIX_PICKLE_KEY")
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COSIGN_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    letters: LettersSettings = Field(default_factory=LettersSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    coordinators: CoordinatorsSettings = Field(default_factory=CoordinatorsSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    matrix: MatrixSettings = Field(default_factory=MatrixSettings)
    secrets: Secrets = Field(default_factory=Secrets, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: COSIGN_<SECTION>__<KEY> overrides bot.toml (passed as init kwargs).
        return (env_settings, init_settings)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read bot.toml (if present) plus the environment; raise ConfigError naming the bad key."""
    data: dict[str, Any] = {}
    if path is not None:
        if not path.exists():
            if path != DEFAULT_CONFIG_PATH:
                raise ConfigError(f"configuration file not found: {path}")
        else:
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if "secrets" in data:
        raise ConfigError(f"{path}: secrets: secrets come from the environment, not bot.toml")
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except SettingsError as exc:
        raise ConfigError(
            f"invalid configuration in the environment: {exc} (list and table values in "
            "COSIGN_<SECTION>__<KEY> variables are JSON, e.g. '[\"a\", \"b\"]')"
        ) from None


def _describe(exc: ValidationError, path: Path | None) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        problems.append(f"{key}: {error['msg']}")
    where = f"{path}: " if path else ""
    return f"{where}invalid configuration: " + "; ".join(problems)
