"""Opt-out, opt-in and help keywords in replies (seed 002). Pure: no I/O.

Only a message that is the keyword alone counts: case, surrounding whitespace and trailing
punctuation are ignored, so ``"Stop."`` and ``" stop "`` opt out but ``"please stop calling"``
does not (a person writing a sentence is not asking to be unsubscribed).
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_OPT_OUT = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT")
DEFAULT_OPT_IN = ("START", "YES", "UNSTOP", "SUBSCRIBE")
DEFAULT_HELP = ("HELP", "INFO")

_TRAILING = string.punctuation + "\u00a1\u00bf\u2026\u3002\uff01\uff1f"


class Action(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"


@dataclass(frozen=True)
class Match:
    action: Action
    keyword: str


def normalize(text: str) -> str:
    """The text as compared with keywords: trimmed, trailing punctuation dropped, upper case."""
    return text.strip().rstrip(_TRAILING).strip().upper()


class Keywords:
    def __init__(self, opt_out: Iterable[str], opt_in: Iterable[str], help: Iterable[str]) -> None:
        self._table: dict[str, Action] = {}
        for action, words in ((Action.HELP, help), (Action.OPT_IN, opt_in), (Action.OPT_OUT, opt_out)):
            for word in words:
                # Opt-out is listed last so it wins if a word is configured twice: when in doubt,
                # stop sending.
                self._table[normalize(word)] = action

    def match(self, text: str) -> Match | None:
        """The action ``text`` asks for, if it is a keyword alone."""
        word = normalize(text)
        action = self._table.get(word)
        return Match(action, word) if action is not None else None
