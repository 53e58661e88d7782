"""Provider adapters: one module per provider kind, registered in :data:`KINDS`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from tidings.config import Settings, describe_validation_error
from tidings.errors import ConfigError
from tidings.providers.base import Provider, ProviderContext
from tidings.providers.fake import FakeProvider
from tidings.providers.gateway import GatewayProvider
from tidings.providers.orange import OrangeProvider
from tidings.providers.twilio import TwilioProvider

KINDS: dict[str, type[Provider]] = {
    FakeProvider.kind: FakeProvider,
    GatewayProvider.kind: GatewayProvider,
    OrangeProvider.kind: OrangeProvider,
    TwilioProvider.kind: TwilioProvider,
}


def build_providers(settings: Settings, context: ProviderContext) -> dict[str, Provider]:
    """One adapter per ``[providers.NAME]`` table; a wrong table raises :class:`ConfigError`."""
    providers: dict[str, Provider] = {}
    for name, table in settings.provider_tables().items():
        if not isinstance(table, dict):
            raise ConfigError(f"setting providers.{name}: must be a table")
        kind = table.get("kind")
        cls = KINDS.get(str(kind)) if kind is not None else None
        if cls is None:
            known = ", ".join(sorted(KINDS))
            raise ConfigError(f"setting providers.{name}.kind: {kind!r} is not one of: {known}")
        try:
            provider_settings = cls.settings_model.model_validate(table)
        except ValidationError as exc:
            raise ConfigError(
                describe_validation_error(
                    exc,
                    prefix=("providers", name),
                    sources=settings.sources,
                    known=cls.settings_model.model_fields,
                )
            ) from exc
        providers[name] = cls(name, provider_settings, context)
    if settings.default_provider not in providers:
        raise ConfigError(
            f"setting default_provider: {settings.default_provider!r} is not a configured provider "
            f"(configured: {', '.join(sorted(providers))})"
        )
    return providers


def provider_settings_schema() -> dict[str, Any]:
    """Settings of each kind, for documentation."""
    return {kind: cls.settings_model.model_json_schema() for kind, cls in KINDS.items()}


__all__ = ["KINDS", "Provider", "ProviderContext", "build_providers"]
