"""Provider adapters: one module per provider kind, registered in :data:`KINDS`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tidings.config import Settings, describe_validation_error
from tidings.errors import ConfigError
from tidings.providers.base import Provider, ProviderContext
from tidings.providers.fake import FakeProvider
from tidings.providers.gateway import GatewayProvider
from tidings.providers.mandrill import MandrillProvider
from tidings.providers.orange import OrangeProvider
from tidings.providers.ses import SesProvider
from tidings.providers.smtp import SmtpProvider
from tidings.providers.twilio import TwilioProvider

KINDS: dict[str, type[Provider]] = {
    FakeProvider.kind: FakeProvider,
    GatewayProvider.kind: GatewayProvider,
    MandrillProvider.kind: MandrillProvider,
    OrangeProvider.kind: OrangeProvider,
    SesProvider.kind: SesProvider,
    SmtpProvider.kind: SmtpProvider,
    TwilioProvider.kind: TwilioProvider,
}


def _shown(settings: Settings, *path: str) -> str:
    """A setting's name, with where its value came from."""
    where = settings.sources.of(path)
    return ".".join(path) + (f" ({where})" if where else "")


def build_providers(settings: Settings, context: ProviderContext) -> dict[str, Provider]:
    """One adapter per ``[providers.NAME]`` table; wrong tables raise :class:`ConfigError` with
    every problem of every table."""
    providers: dict[str, Provider] = {}
    problems: list[str] = []
    for name, table in settings.provider_tables().items():
        if not isinstance(table, dict):
            problems.append(f"setting {_shown(settings, 'providers', name)}: must be a table")
            continue
        kind = table.get("kind")
        cls = KINDS.get(str(kind)) if kind is not None else None
        if cls is None:
            known = ", ".join(sorted(KINDS))
            problems.append(
                f"setting {_shown(settings, 'providers', name, 'kind')}: {kind!r} is not one of: {known}"
            )
            continue
        try:
            provider_settings = cls.settings_model.model_validate(table)
        except ValidationError as exc:
            problems += describe_validation_error(
                exc,
                prefix=("providers", name),
                sources=settings.sources,
                known=cls.settings_model.model_fields,
            )
            continue
        providers[name] = cls(name, provider_settings, context)
    if settings.default_provider not in settings.provider_tables():
        problems.append(
            f"setting default_provider: {settings.default_provider!r} is not a configured provider "
            f"(configured: {', '.join(sorted(settings.provider_tables()))})"
        )
    if problems:
        raise ConfigError(problems=problems)
    return providers


def provider_settings_schema() -> dict[str, Any]:
    """Settings of each kind, for documentation."""
    return {kind: cls.settings_model.model_json_schema() for kind, cls in KINDS.items()}


__all__ = ["KINDS", "Provider", "ProviderContext", "build_providers"]
