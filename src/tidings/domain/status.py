"""The message status machine: statuses, their order, and which moves are allowed.

Reports about a message (a provider's answer, a delivery receipt, a gateway update) may arrive in
any order: a receipt before the send call returns, ``delivered`` before ``sent``, a duplicate a
day later. So the final status must not depend on arrival order. Statuses are ranked

    scheduled < pending < sending < sent < failed < delivered

and a report only ever moves a message *up* (the status is the highest one reported so far), and
never into ``sending``: only a claim does that.
``failed`` stops further attempts, but proof of delivery still lifts it to ``delivered``.
The only downward move is the worker's own retry (``sending → pending``), and ``cancelled`` is
reachable only from ``scheduled`` or ``pending``. Every report is recorded, even one that changes
nothing. This module does no I/O; ``store`` turns these rules into compare-and-set statements.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    SCHEDULED = "scheduled"
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


RANK: dict[Status, int] = {
    Status.SCHEDULED: 0,
    Status.PENDING: 1,
    Status.SENDING: 2,
    Status.SENT: 3,
    Status.FAILED: 4,
    Status.DELIVERED: 5,
}
"""Order of the statuses a report can move between; ``cancelled`` stands outside it."""

CANCELLABLE = frozenset({Status.SCHEDULED, Status.PENDING})
"""Statuses from which a message may be cancelled: it has not been handed to a provider."""


def moves_up_from(target: Status) -> frozenset[Status]:
    """The statuses a report of ``target`` moves a message up from (those ranked below it)."""
    if target not in RANK:
        raise ValueError(f"{target!r} cannot be reported")
    rank = RANK[target]
    return frozenset(s for s, r in RANK.items() if r < rank)


def apply_report(current: Status, reported: Status | None) -> Status:
    """The status after a report of ``reported`` reaches a message in ``current``.

    A report never moves a message down, never revives a cancelled one, and a report of the
    current status changes nothing. ``None`` is a report that says nothing about the status (a
    provider's "delivery uncertain", a status word we do not know): it is recorded, no more.
    Nor does a report of ``sending`` (a provider's "queued"): only a claim puts a message in
    ``sending``, under a lease or in a phone's hands, so that something always moves it on.
    """
    if reported is not None and reported is not Status.SENDING and current in moves_up_from(reported):
        return reported
    return current
