"""Settings: defaults that work with nothing configured, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from tidings.config import AlertRules, RuleName, load_settings
from tidings.errors import ConfigError
from tidings.providers import build_providers
from tidings.providers.base import ProviderContext
from tidings.providers.fake import FakeProvider

CONTEXT = ProviderContext(base_url="http://localhost:8000")


def test_no_configuration_gives_sqlite_and_the_fake_provider() -> None:
    settings = load_settings({})
    assert settings.database_url == "sqlite:///./tidings.db"
    providers = build_providers(settings, CONTEXT)
    assert list(providers) == ["fake"]
    assert isinstance(providers["fake"], FakeProvider)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    file = tmp_path / "tidings.toml"
    file.write_text('port = 9000\nmax_attempts = 3\n[providers.sms]\nkind = "fake"\n')
    settings = load_settings(
        {"TIDINGS_CONFIG": str(file), "TIDINGS_PORT": "9100", "TIDINGS_DEFAULT_PROVIDER": "sms"}
    )
    assert settings.port == 9100
    assert settings.max_attempts == 3
    assert list(build_providers(settings, CONTEXT)) == ["sms"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TIDINGS_PORT": "eighty"}, "setting port"),
        ({"TIDINGS_MAX_ATTEMPTS": "0"}, "setting max_attempts"),
        ({"TIDINGS_DATABASE_URL": "mysql://x"}, "setting database_url"),
        ({"TIDINGS_DEFAULT_REGION": "XX"}, "setting default_region"),
        ({"TIDINGS_CONFIG": "/nonexistent/tidings.toml"}, "/nonexistent/tidings.toml"),
    ],
)
def test_a_wrong_setting_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert named in caught.value.message


def test_unknown_key_in_the_file_is_named(tmp_path: Path) -> None:
    file = tmp_path / "tidings.toml"
    file.write_text("max_atempts = 3\n")
    with pytest.raises(ConfigError, match="max_atempts"):
        load_settings({"TIDINGS_CONFIG": str(file)})


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ('[providers.x]\nkind = "nope"\n', "providers.x.kind"),
        ("[providers.x]\nlatency_ms = 1\n", "providers.x.kind"),
        ('[providers.x]\nkind = "fake"\nconcurrency = 0\n', "providers.x.concurrency"),
        ('[providers.x]\nkind = "fake"\nlatency = 5\n', "providers.x.latency"),
    ],
)
def test_a_wrong_provider_table_is_named(tmp_path: Path, table: str, named: str) -> None:
    file = tmp_path / "tidings.toml"
    file.write_text('default_provider = "x"\n' + table)
    settings = load_settings({"TIDINGS_CONFIG": str(file)})
    with pytest.raises(ConfigError) as caught:
        build_providers(settings, CONTEXT)
    assert named in caught.value.message


def test_default_provider_must_exist(tmp_path: Path) -> None:
    file = tmp_path / "tidings.toml"
    file.write_text('[providers.sms]\nkind = "fake"\n')
    settings = load_settings({"TIDINGS_CONFIG": str(file)})
    with pytest.raises(ConfigError, match="default_provider"):
        build_providers(settings, CONTEXT)


def test_list_and_table_settings_come_from_the_environment_as_json() -> None:
    settings = load_settings(
        {"TIDINGS_ROUTES": '{"+225": ["fake"]}', "TIDINGS_TRUSTED_PROXIES": '["10.0.0.0/8"]'}
    )
    assert settings.routes == {"+225": ["fake"]}
    assert settings.trusted_proxies == ["10.0.0.0/8"]
    with pytest.raises(ConfigError, match="TIDINGS_ROUTES must be JSON"):
        load_settings({"TIDINGS_ROUTES": "+225=fake"})


def test_twilio_needs_a_sender(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text(
        'default_provider = "tw"\n[providers.tw]\nkind = "twilio"\n'
        'account_sid = "AC00000000000000000000000000000001"\nauth_token = "x"\n'
    )
    settings = load_settings({"TIDINGS_CONFIG": str(config)})
    with pytest.raises(ConfigError, match=r"providers\.tw.*`from`"):
        build_providers(settings, ProviderContext(base_url="http://x"))


def test_the_example_configuration_in_the_repository_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "tidings.toml"
    settings = load_settings({"TIDINGS_CONFIG": str(example)})
    providers = build_providers(settings, ProviderContext(base_url=settings.base_url))
    assert {p.kind for p in providers.values()} == {"twilio", "orange", "fake", "smtp", "ses", "mandrill"}
    assert settings.routes["+225"] == ["orange", "twilio"]
    assert settings.alerts.delivery_rate.below == 0.95 and not settings.alerts.batch_stalled.enabled


def test_provider_settings_and_secrets_come_from_the_environment(tmp_path: Path) -> None:
    # The file holds no secret; the environment fills it in, nested by provider name.
    file = tmp_path / "tidings.toml"
    file.write_text(
        'default_provider = "tw"\n[providers.tw]\nkind = "twilio"\n'
        'account_sid = "AC00000000000000000000000000000001"\nfrom = "+15005550006"\n'
    )
    settings = load_settings(
        {
            "TIDINGS_CONFIG": str(file),
            "TIDINGS_PROVIDERS__TW__AUTH_TOKEN": "s3cret-token",
            "TIDINGS_PROVIDERS__TW__WEBHOOK_ALLOW_IPS": '["10.0.0.0/8"]',
            "TIDINGS_PROVIDERS__BACKUP__KIND": "fake",
        }
    )
    providers = build_providers(settings, CONTEXT)
    assert sorted(providers) == ["backup", "tw"]
    twilio = providers["tw"].settings
    assert twilio.webhook_allow_ips == ["10.0.0.0/8"]
    token = twilio.auth_token  # type: ignore[attr-defined]
    assert token.get_secret_value() == "s3cret-token"
    # A secret is never shown when the provider's settings are printed or logged.
    assert "s3cret-token" not in repr(twilio) and "s3cret-token" not in str(twilio)


def test_a_secret_is_not_repeated_in_an_error_about_it(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "TIDINGS_PROVIDERS__TW__KIND": "twilio",
            "TIDINGS_PROVIDERS__TW__ACCOUNT_SID": "not-a-sid-but-secret-looking",
            "TIDINGS_PROVIDERS__TW__AUTH_TOKEN": "",
            "TIDINGS_DEFAULT_PROVIDER": "tw",
        }
    )
    with pytest.raises(ConfigError) as caught:
        build_providers(settings, CONTEXT)
    message = caught.value.message
    assert "providers.tw.auth_token (from TIDINGS_PROVIDERS__TW__AUTH_TOKEN)" in message
    assert "providers.tw.account_sid (from TIDINGS_PROVIDERS__TW__ACCOUNT_SID)" in message
    assert "not-a-sid-but-secret-looking" not in message


def test_a_typo_gets_a_did_you_mean_wherever_it_is(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TIDINGS_MAX_ATEMPTS \(did you mean TIDINGS_MAX_ATTEMPTS\?\)"):
        load_settings({"TIDINGS_MAX_ATEMPTS": "3"})
    file = tmp_path / "tidings.toml"
    file.write_text("max_atempts = 3\n")
    with pytest.raises(
        ConfigError,
        match=r"max_atempts \(in .*tidings.toml\): unknown setting \(did you mean max_attempts\?\)",
    ):
        load_settings({"TIDINGS_CONFIG": str(file)})
    file.write_text('default_provider = "x"\n[providers.x]\nkind = "fake"\nlatency = 5\n')
    with pytest.raises(ConfigError, match=r"providers\.x\.latency .*did you mean latency_ms\?"):
        build_providers(load_settings({"TIDINGS_CONFIG": str(file)}), CONTEXT)


def test_variables_that_are_not_settings_are_left_alone() -> None:
    settings = load_settings({"TIDINGS_TEST_POSTGRES_URL": "postgresql://x/y", "OTHER": "1"})
    assert settings.port == 8000


def test_a_value_names_where_it_came_from(tmp_path: Path) -> None:
    file = tmp_path / "tidings.toml"
    file.write_text("port = 99999\n")
    with pytest.raises(ConfigError, match=r"setting port \(in .*tidings.toml\)"):
        load_settings({"TIDINGS_CONFIG": str(file)})
    with pytest.raises(ConfigError, match=r"setting port \(from TIDINGS_PORT\)"):
        load_settings({"TIDINGS_CONFIG": str(file), "TIDINGS_PORT": "-1"})


def test_the_api_key_a_client_command_uses_is_not_taken_for_a_setting() -> None:
    # `tidings send-batch --url` reads TIDINGS_API_KEY; with it exported, every other command
    # still starts.
    settings = load_settings({"TIDINGS_API_KEY": "tdg_x", "TIDINGS_PORT": "9100"})
    assert settings.port == 9100


def test_settings_whose_names_begin_like_the_client_key_variable_are_still_settings() -> None:
    settings = load_settings({"TIDINGS_API_KEY": "tdg_x", "TIDINGS_API_KEY_CACHE_SECONDS": "0"})
    assert settings.api_key_cache_seconds == 0


def test_alert_rules_default_to_seed_002_and_every_rule_is_on() -> None:
    alerts = load_settings({}).alerts
    delivery, failure = alerts.delivery_rate, alerts.failure_rate
    assert (delivery.below, delivery.window_seconds, delivery.min_messages) == (0.9, 86_400, 10)
    assert (failure.above, failure.window_seconds, failure.min_messages) == (0.1, 86_400, 10)
    assert alerts.pending.above == 100
    assert all(getattr(alerts, name).enabled for name in AlertRules.model_fields)
    assert load_settings({}).alert_interval == 60


def test_the_rule_names_are_the_rules_settings() -> None:
    assert list(get_args(RuleName)) == list(AlertRules.model_fields)


def test_alert_rules_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "tidings.toml"
    file.write_text(
        "alert_interval = 30\n"
        "[alerts.delivery_rate]\nbelow = 0.95\nwindow_seconds = 3600\n"
        "[alerts.batch_stalled]\nenabled = false\n"
    )
    settings = load_settings({"TIDINGS_CONFIG": str(file)})
    assert settings.alert_interval == 30
    assert (settings.alerts.delivery_rate.below, settings.alerts.delivery_rate.window_seconds) == (0.95, 3600)
    assert settings.alerts.delivery_rate.min_messages == 10
    assert not settings.alerts.batch_stalled.enabled
    # The variable is JSON, and replaces the file's table.
    settings = load_settings(
        {"TIDINGS_CONFIG": str(file), "TIDINGS_ALERTS": '{"gateway_silent": {"seconds": 120}}'}
    )
    assert settings.alerts.gateway_silent.seconds == 120
    assert settings.alerts.delivery_rate.below == 0.9 and settings.alerts.batch_stalled.enabled


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ("[alerts.delivery_rate]\nbelow = 90\n", r"alerts\.delivery_rate\.below \(in .*\): .*0\.9 for 90 %"),
        ("[alerts.failure_rate]\nabove = -0.1\n", r"alerts\.failure_rate\.above \(in .*\): .*from 0 to 1"),
        ("[alerts.pending]\nabove = -1\n", r"alerts\.pending\.above \(in .*\): .*greater than or equal to 0"),
        ("[alerts.oldest_waiting]\nseconds = 0\n", r"alerts\.oldest_waiting\.seconds .*greater than 0"),
        ("[alerts.failover]\nwindow_seconds = inf\n", r"alerts\.failover\.window_seconds .*less than"),
        ("[alerts.failover]\nwindow_seconds = 'an hour'\n", r"alerts\.failover\.window_seconds .*number"),
        ("[alerts.webhooks_failing]\nenabled = 'maybe'\n", r"alerts\.webhooks_failing\.enabled .*boolean"),
        ("[alerts.pending]\nabov = 5\n", r"alerts\.pending\.abov .*unknown setting \(did you mean above\?\)"),
        ("[alerts.pendng]\nabove = 5\n", r"alerts\.pendng .*unknown setting \(did you mean pending\?\)"),
        ("alerts = 5\n", r"setting alerts \(in .*\)"),
    ],
)
def test_a_wrong_alert_rule_is_named(tmp_path: Path, table: str, named: str) -> None:
    file = tmp_path / "tidings.toml"
    file.write_text(table)
    with pytest.raises(ConfigError, match=named):
        load_settings({"TIDINGS_CONFIG": str(file)})


def test_a_wrong_alert_rule_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"alerts\.pending\.above \(from TIDINGS_ALERTS\)"):
        load_settings({"TIDINGS_ALERTS": '{"pending": {"above": "lots"}}'})
    with pytest.raises(ConfigError, match="TIDINGS_ALERTS must be JSON"):
        load_settings({"TIDINGS_ALERTS": "pending.above=5"})
