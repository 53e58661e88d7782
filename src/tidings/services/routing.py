"""Which providers a message goes through: the one asked for, else a route, else the default,
per channel.

For email, ``email_routes`` maps a recipient's domain (and its subdomains) to providers, the
longest domain first.

For SMS a route table maps destination prefixes to providers in the order to try them
(``"+225" = ["orange", "twilio"]``); the longest matching prefix wins. After ``failover_after``
temporary failures in a row on one provider, the worker moves the message to the next.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from tidings.config import Settings
from tidings.domain.content import Channel
from tidings.errors import ConfigError, InvalidInput
from tidings.providers.base import Provider


def email_default(settings: Settings, providers: Mapping[str, Provider]) -> str | None:
    """The provider of email that names none and has no route: ``default_email_provider``, else
    ``default_provider`` when it sends email, else the one configured provider that does."""
    if settings.default_email_provider is not None:
        chosen = providers.get(settings.default_email_provider)
        if chosen is None or Channel.EMAIL not in chosen.channels:
            raise ConfigError(
                f"setting default_email_provider: {settings.default_email_provider!r} is not a configured "
                "provider that sends email"
            )
        return settings.default_email_provider
    default = providers.get(settings.default_provider)
    if default is not None and Channel.EMAIL in default.channels:
        return settings.default_provider
    senders = [name for name, p in providers.items() if Channel.EMAIL in p.channels and p.kind != "fake"]
    return senders[0] if len(senders) == 1 else None


class Router:
    def __init__(
        self, settings: Settings, providers: Collection[str], *, email_provider: str | None = None
    ) -> None:
        tables = [("routes", settings.routes), ("email_routes", settings.email_routes)]
        for setting, table in tables:
            for prefix, names in table.items():
                unknown = [n for n in names if n not in providers]
                if unknown:
                    raise ConfigError(
                        f"setting {setting}.{prefix}: not configured: {', '.join(map(repr, unknown))} "
                        f"(configured providers: {', '.join(sorted(providers))})"
                    )
        # Longest prefix (or domain) first, so the first match is the most specific one.
        self._routes: dict[Channel, list[tuple[str, list[str]]]] = {
            Channel.SMS: sorted(settings.routes.items(), key=lambda item: len(item[0]), reverse=True),
            Channel.EMAIL: sorted(settings.email_routes.items(), key=lambda item: len(item[0]), reverse=True),
        }
        self._defaults: dict[Channel, str] = {Channel.SMS: settings.default_provider}
        if email_provider is not None:
            self._defaults[Channel.EMAIL] = email_provider

    def route(self, to: str, requested: str | None = None, channel: Channel = Channel.SMS) -> list[str]:
        """The providers to try for a message on ``channel`` to ``to``, in order."""
        if requested is not None:
            return [requested]
        if channel is Channel.EMAIL:
            domain = to.rsplit("@", 1)[-1].lower()
            for suffix, names in self._routes[channel]:
                if domain == suffix or domain.endswith("." + suffix):
                    return list(dict.fromkeys(names))
        else:
            for prefix, names in self._routes[channel]:
                if to.startswith(prefix):
                    return list(dict.fromkeys(names))
        default = self._defaults.get(channel)
        if default is None:
            raise InvalidInput(f"no provider is configured for {channel.value}", field="provider")
        return [default]
