"""Keyword matching: only the keyword alone counts, whatever its case and punctuation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.domain.keywords import DEFAULT_HELP, DEFAULT_OPT_IN, DEFAULT_OPT_OUT, Action, Keywords

KEYWORDS = Keywords(DEFAULT_OPT_OUT, DEFAULT_OPT_IN, DEFAULT_HELP)


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("STOP", Action.OPT_OUT),
        (" stop ", Action.OPT_OUT),
        ("Stop.", Action.OPT_OUT),
        ("unsubscribe!!", Action.OPT_OUT),
        ("\tQuit?\n", Action.OPT_OUT),
        ("start", Action.OPT_IN),
        ("Yes!", Action.OPT_IN),
        ("help", Action.HELP),
        ("INFO?", Action.HELP),
    ],
)
def test_keywords_match_ignoring_case_space_and_trailing_punctuation(text: str, action: Action) -> None:
    found = KEYWORDS.match(text)
    assert found is not None and found.action is action


@pytest.mark.parametrize(
    "text", ["please stop", "stop it", "STOPPED", "st op", "", "...", "yes please", "¿stop"]
)
def test_anything_but_the_keyword_alone_is_not_a_keyword(text: str) -> None:
    assert KEYWORDS.match(text) is None


def test_configured_keywords_replace_the_defaults_and_opt_out_wins_a_tie() -> None:
    keywords = Keywords(["ARRET", "STOP"], ["STOP", "OUI"], [])
    assert keywords.match("arret").action is Action.OPT_OUT  # type: ignore[union-attr]
    assert keywords.match("stop").action is Action.OPT_OUT  # type: ignore[union-attr]
    assert keywords.match("oui").action is Action.OPT_IN  # type: ignore[union-attr]
    assert keywords.match("help") is None


@given(st.sampled_from(DEFAULT_OPT_OUT), st.text(" \t\n", max_size=3), st.text(".!?,;:", max_size=3))
def test_any_spacing_and_punctuation_around_an_opt_out_keyword_still_opts_out(
    word: str, space: str, punct: str
) -> None:
    found = KEYWORDS.match(space + word.lower() + punct + space)
    assert found is not None and found.action is Action.OPT_OUT and found.keyword == word
