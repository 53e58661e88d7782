"""Routes: the providers a message may go through, in order. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence


def next_provider(route: Sequence[str] | None, current: str) -> str | None:
    """The provider after ``current`` in ``route``, if there is one."""
    if not route or current not in route:
        return None
    position = list(route).index(current)
    return route[position + 1] if position + 1 < len(route) else None


def tried(route: Sequence[str] | None, current: str) -> list[str]:
    """The providers a message whose provider is now ``current`` has been handed to so far (its
    route up to ``current``)."""
    if not route or current not in route:
        return [current]
    return list(route[: list(route).index(current) + 1])
