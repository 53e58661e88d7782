"""Routes: the requested provider, else the longest matching prefix, else the default."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.config import Settings
from tidings.errors import ConfigError
from tidings.services.routing import Router

PROVIDERS = ("orange", "twilio", "fake", "phone")


def router(**routes: list[str]) -> Router:
    settings = Settings.model_validate(
        {"default_provider": "fake", "routes": {k.replace("p", "+"): v for k, v in routes.items()}}
    )
    return Router(settings, PROVIDERS)


def test_the_longest_matching_prefix_wins() -> None:
    r = router(p225=["orange", "twilio"], p2250=["phone"], p1=["twilio"])
    assert r.route("+2250700000000") == ["phone"]
    assert r.route("+2257000000000") == ["orange", "twilio"]
    assert r.route("+14155550123") == ["twilio"]


def test_no_match_goes_to_the_default_and_a_request_is_not_routed() -> None:
    r = router(p225=["orange", "twilio"])
    assert r.route("+254712345678") == ["fake"]
    assert r.route("+2250700000000", "twilio") == ["twilio"]


def test_a_provider_listed_twice_is_tried_once() -> None:
    assert router(p225=["orange", "twilio", "orange"]).route("+2251") == ["orange", "twilio"]


def test_a_route_naming_an_unknown_provider_stops_start_up_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"routes\.\+225: not configured: 'nope'"):
        router(p225=["orange", "nope"])


@pytest.mark.parametrize("prefix", ["225", "+", "+22a", "+1234567890123456"])
def test_a_malformed_prefix_is_a_configuration_error(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Settings.model_validate({"routes": {prefix: ["fake"]}})


@given(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True))
def test_the_chosen_route_is_the_most_specific_match(number: str) -> None:
    routes = {"+2": ["orange"], "+22": ["twilio"], "+225": ["phone"], "+1": ["twilio"]}
    r = Router(Settings.model_validate({"routes": routes}), PROVIDERS)
    matching = [p for p in routes if number.startswith(p)]
    expected = routes[max(matching, key=len)] if matching else ["fake"]
    assert r.route(number) == expected


def test_email_goes_by_its_domain_the_longest_first_and_else_to_the_email_default() -> None:
    from tidings.domain.content import Channel

    settings = Settings.model_validate(
        {"email_routes": {"example.org": ["ses", "smtp"], "health.example.org": ["smtp"]}}
    )
    r = Router(settings, ("ses", "smtp", "fake"), email_provider="fake")
    assert r.route("amina@example.org", channel=Channel.EMAIL) == ["ses", "smtp"]
    assert r.route("amina@mail.example.org", channel=Channel.EMAIL) == ["ses", "smtp"]
    assert r.route("otieno@clinic.health.example.org", channel=Channel.EMAIL) == ["smtp"]
    assert r.route("wanjiru@notexample.org", channel=Channel.EMAIL) == ["fake"]
    # Numbers are routed by the SMS table only.
    assert r.route("+254712345678") == ["fake"]


def test_an_email_route_naming_an_unknown_provider_or_no_domain_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"email_routes\.example\.org"):
        Router(Settings.model_validate({"email_routes": {"example.org": ["nowhere"]}}), PROVIDERS)
    with pytest.raises(ValueError, match=r"a domain is like example\.org"):
        Settings.model_validate({"email_routes": {"not a domain": ["fake"]}})
