"""tidings: self-hosted SMS delivery that tracks every message to a final, truthful status.

For applications that receive its callbacks: :func:`verify_signature`.
"""

from tidings.signatures import verify_signature

__all__ = ["verify_signature"]
