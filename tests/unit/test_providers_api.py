"""The public names of the modules adapters build on: what ``__all__`` promises exists."""

from __future__ import annotations

from types import ModuleType

import pytest

from tidings.providers import http, oauth


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (http, ["Answer", "Auth", "HttpProvider", "HttpRequest", "retry_after"]),
        (oauth, ["DEFAULT_TOKEN_LIFETIME", "REFUSED_PAUSE", "ClientCredentials"]),
    ],
)
def test_all_lists_the_public_api_and_every_name_in_it_exists(module: ModuleType, names: list[str]) -> None:
    assert module.__all__ == names
    assert all(hasattr(module, name) for name in names)
