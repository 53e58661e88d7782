"""Routes: the providers a message may go through, in order. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence


def next_provider(route: Sequence[str] | None, current: str) -> str | None:
    """The provider after ``current`` in ``route``, if there is one."""
    if not route or current not in route:
        return None
    position = list(route).index(current)
    return route[position + 1] if position + 1 < len(route) else None
