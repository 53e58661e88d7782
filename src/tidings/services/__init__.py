"""What the transports call: accepting, reading and cancelling messages, inbound effects and the
opt-out list, tracking, webhooks, the Android gateway's poll, callbacks. The REST API, the CLI,
and next gRPC and the dashboard call these same functions; they call ``store/``.

    container.py   Service: settings, store, providers and these services, started together
    accepting.py   the one path from a send request to a stored message
    messages.py    reading, listing, cancelling
    inbound.py     inbound messages and what they set off; the opt-out list
    tracking.py    matching provider reports to messages and applying them
    webhooks.py    the webhook pipeline: log, check, verify, parse, apply
    gateway.py     the Android gateway's poll
    callbacks.py   callback settings, the list, retries
    routing.py     which providers a message goes through
"""

from tidings.services.container import Service

__all__ = ["Service"]
