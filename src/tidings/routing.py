"""Which providers a message goes through: the one asked for, else a route, else the default.

A route table maps destination prefixes to providers in the order to try them
(``"+225" = ["orange", "twilio"]``); the longest matching prefix wins. After ``failover_after``
temporary failures in a row on one provider, the worker moves the message to the next.
"""

from __future__ import annotations

from collections.abc import Collection

from tidings.config import Settings
from tidings.errors import ConfigError


class Router:
    def __init__(self, settings: Settings, providers: Collection[str]) -> None:
        for prefix, names in settings.routes.items():
            unknown = [n for n in names if n not in providers]
            if unknown:
                raise ConfigError(
                    f"setting routes.{prefix}: not configured: {', '.join(map(repr, unknown))} "
                    f"(configured providers: {', '.join(sorted(providers))})"
                )
        # Longest prefix first, so the first match is the most specific one.
        self._routes = sorted(settings.routes.items(), key=lambda item: len(item[0]), reverse=True)
        self._default = settings.default_provider

    def route(self, to: str, requested: str | None = None) -> list[str]:
        """The providers to try for a message to ``to`` (E.164), in order."""
        if requested is not None:
            return [requested]
        for prefix, names in self._routes:
            if to.startswith(prefix):
                return list(dict.fromkeys(names))
        return [self._default]
