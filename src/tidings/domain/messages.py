"""A message ready to be stored: validated, normalised, routed. Pure data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tidings.domain.content import Channel, Content, EmailContent, SmsContent
from tidings.domain.segments import analyze


@dataclass(frozen=True)
class NewMessage:
    """A validated message on one channel, with its route fixed."""

    to: str
    content: Content
    provider: str
    max_attempts: int
    sender: str | None = None
    send_at: datetime | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    route: list[str] | None = None
    """The providers to try in order (the first is ``provider``); ``None``: only ``provider``."""
    ordered: bool = False
    callback_url: str | None = None
    exempt_from_opt_out: bool = False
    """Sent even to an address that opted out: only the confirmation of an opt-out is."""
    batch_id: str | None = None
    template_id: str | None = None
    template_version: int | None = None
    """The stored template (and its version) the content was rendered from."""

    @property
    def channel(self) -> Channel:
        return Channel.EMAIL if isinstance(self.content, EmailContent) else Channel.SMS

    @property
    def text(self) -> str:
        """The text kept as the message's body: an SMS's text, an email's text part (or subject)."""
        if isinstance(self.content, SmsContent):
            return self.content.text
        return self.content.text or self.content.subject

    @classmethod
    def sms(cls, *, to: str, text: str, provider: str, max_attempts: int, **rest: Any) -> NewMessage:
        """An SMS to the E.164 number ``to``, its segments counted from ``text``."""
        info = analyze(text)
        content = SmsContent(text=text, segments=info.segments, encoding=info.encoding.value)
        return cls(to=to, content=content, provider=provider, max_attempts=max_attempts, **rest)

    @classmethod
    def email(
        cls, *, to: str, content: EmailContent, provider: str, max_attempts: int, **rest: Any
    ) -> NewMessage:
        """An email to the (normalised) address ``to``."""
        return cls(to=to, content=content, provider=provider, max_attempts=max_attempts, **rest)
