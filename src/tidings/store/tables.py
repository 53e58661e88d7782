"""The database schema. Migrations in ``store/migrations`` must produce exactly this."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ADDRESS_LENGTH = 320
"""The longest address a message may go to or come from (an email address's limit)."""

# BigInteger primary keys autoincrement on PostgreSQL; SQLite only does that for INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("last_used_at", DateTime()),
    Column("revoked_at", DateTime()),
    # Where status changes and inbound SMS are posted for this key's application, signed with
    # callback_secret.
    Column("callback_url", Text()),
    Column("callback_secret", String(64)),
    # After a rotation the old secret still signs, beside the new one, until this time.
    Column("previous_callback_secret", String(64)),
    Column("previous_secret_until", DateTime()),
    # What the key may do (send, read, admin), how many requests a second it may make (NULL: the
    # setting's default), and whether it is a test key (its messages only reach the fake provider).
    # Space-separated, as OAuth writes scopes.
    Column("scopes", String(64), nullable=False, server_default="send read admin"),
    Column("rate_limit", Float()),
    Column("test", Boolean(), nullable=False, server_default=false()),
)

messages = Table(
    "messages",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("channel", String(16), nullable=False, server_default="sms"),
    # An E.164 number for SMS, an address for email (up to 320 characters).
    Column("to", String(ADDRESS_LENGTH), nullable=False),
    Column("sender", String(ADDRESS_LENGTH)),
    Column("body", Text(), nullable=False),
    # SMS only: how the body is cut into billable parts.
    Column("segments", Integer()),
    Column("encoding", String(8)),
    Column("status", String(16), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("provider_message_id", String(128)),
    Column("provider_status", String(64)),
    Column("error_code", String(64)),
    Column("error_message", Text()),
    # The provider's error_code in words every provider shares (domain/failures.py).
    Column("failure_reason", String(32)),
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("max_attempts", Integer(), nullable=False),
    Column("next_attempt_at", DateTime(), nullable=False),
    Column("send_at", DateTime()),
    Column("created_at", DateTime(), nullable=False),
    Column("updated_at", DateTime(), nullable=False),
    Column("sent_at", DateTime()),
    Column("delivered_at", DateTime()),
    Column("failed_at", DateTime()),
    Column("cancelled_at", DateTime()),
    Column("tags", JSON(), nullable=False),
    Column("metadata", JSON(), nullable=False),
    Column("api_key_id", String(26)),
    Column("idempotency_key", String(255)),
    Column("request_hash", String(64)),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", DateTime()),
    # The providers this message may go through, in order (``provider`` is the current one);
    # NULL means only ``provider``.
    Column("route", JSON()),
    Column("provider_failures", Integer(), nullable=False, server_default="0"),
    # Temporary failures in a row on the current provider; at ``failover_after`` the next is tried.
    Column("ordered", Boolean(), nullable=False, server_default=false()),
    Column("polled_at", DateTime()),
    Column("polls", Integer(), nullable=False, server_default="0"),
    Column("callback_url", Text()),
    # When the body, metadata and provider payloads were removed (retention).
    Column("redacted_at", DateTime()),
    # Email only: the subject, the HTML part (``body`` holds the text part), where replies go,
    # extra headers, and when the recipient first opened it and clicked in it.
    Column("subject", Text()),
    Column("html", Text()),
    Column("reply_to", String(ADDRESS_LENGTH)),
    Column("headers", JSON()),
    Column("opened_at", DateTime()),
    Column("clicked_at", DateTime()),
    # The batch the message came in, and the stored template (and its version) it was rendered from.
    Column("batch_id", String(26)),
    Column("template_id", String(26)),
    Column("template_version", Integer()),
    # What it cost, once known (from the provider, else the price table): an exact amount in
    # millionths of ``currency`` (ISO 4217), summed exactly on both databases.
    Column("cost_micros", BigInteger()),
    Column("currency", String(3)),
    # Sent even to an address on the suppression list: only the confirmation of an opt-out.
    Column("exempt_from_opt_out", Boolean(), nullable=False, server_default=false()),
    # The queue: due messages of one provider, oldest first. Partial, so it holds only the
    # waiting rows and stays small however many finished messages the table keeps.
    Index(
        "ix_messages_due",
        "provider",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    Index(
        "ix_messages_scheduled",
        "send_at",
        postgresql_where=text("status = 'scheduled'"),
        sqlite_where=text("status = 'scheduled'"),
    ),
    Index(
        "ix_messages_leased",
        "lease_expires_at",
        postgresql_where=text("status = 'sending'"),
        sqlite_where=text("status = 'sending'"),
    ),
    # Sent, awaiting a receipt: the status poller's work list.
    Index(
        "ix_messages_awaiting_receipt",
        "provider",
        "sent_at",
        postgresql_where=text("status = 'sent'"),
        sqlite_where=text("status = 'sent'"),
    ),
    Index("ix_messages_idempotency", "api_key_id", "idempotency_key", unique=True),
    Index("ix_messages_provider_message", "provider", "provider_message_id"),
    Index("ix_messages_to", "to", "id"),
    Index("ix_messages_status", "status", "id"),
    Index("ix_messages_created_at", "created_at"),
    Index("ix_messages_batch", "batch_id", "id"),
    # Searching by cost. Partial: a message has no cost (nor currency) when it is stored.
    Index(
        "ix_messages_cost",
        "currency",
        "cost_micros",
        postgresql_where=text("currency IS NOT NULL"),
        sqlite_where=text("currency IS NOT NULL"),
    ),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(26), primary_key=True),
    # Whose batch: the API key's id, or "" for one written straight to the database by the CLI.
    # A group id is unique per owner (the batch's idempotency key).
    Column("owner", String(26), nullable=False),
    Column("group_id", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("template_id", String(26)),
    Column("template_version", Integer()),
    # The shared part as accepted (templates, context, sender, provider, send_at, tags, metadata…).
    Column("shared", JSON(), nullable=False),
    Column("tags", JSON(), nullable=False),
    Column("total", Integer(), nullable=False),
    Column("accepted", Integer(), nullable=False),
    # The recipients refused at acceptance: [{index, code, message, field}], the first answer's.
    Column("refused", JSON(), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("cancelled_at", DateTime()),
    Index("ix_batches_group", "owner", "group_id", unique=True),
    Index("ix_batches_created_at", "created_at"),
)

batch_tags = Table(
    "batch_tags",
    metadata,
    Column("batch_id", String(26), ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Index("ix_batch_tags_tag", "tag", "batch_id"),
)

templates = Table(
    "templates",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("channel", String(16), nullable=False),
    # The current version; every version's text is kept in template_versions.
    Column("version", Integer(), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("updated_at", DateTime(), nullable=False),
)

template_versions = Table(
    "template_versions",
    metadata,
    # Kept after the template is deleted: its messages still name the version they came from.
    Column("template_id", String(26), primary_key=True),
    Column("version", Integer(), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("channel", String(16), nullable=False),
    # SMS: body. Email: subject, outer (the layout) and inner (the body, Markdown or HTML).
    Column("body", Text()),
    Column("subject", Text()),
    Column("outer", Text()),
    Column("inner", Text()),
    Column("created_at", DateTime(), nullable=False),
)

used_signatures = Table(
    "used_signatures",
    metadata,
    # A signed request's signature, kept until its timestamp is out of tolerance: used twice is refused.
    Column("signature", String(64), primary_key=True),
    Column("api_key_id", String(26), nullable=False),
    Column("expires_at", DateTime(), nullable=False),
    Index("ix_used_signatures_expires_at", "expires_at"),
)

message_tags = Table(
    "message_tags",
    metadata,
    Column("message_id", String(26), ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Index("ix_message_tags_tag", "tag", "message_id"),
)

message_attachments = Table(
    "message_attachments",
    metadata,
    # An email's files, in order; kept apart so that reading messages never loads them.
    Column("message_id", String(26), ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer(), primary_key=True),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(127), nullable=False),
    Column("size", Integer(), nullable=False),
    Column("data", LargeBinary(), nullable=False),
)

server_secrets = Table(
    "server_secrets",
    metadata,
    # Secrets of this installation, made when the schema is created (the key that signs
    # unsubscribe links, so that links keep working across restarts and processes).
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),
)

message_provider_ids = Table(
    "message_provider_ids",
    metadata,
    # A provider's ids for a message beyond its main one (``messages.provider_message_id``): one
    # per SMS part for some providers, or an earlier send's. A receipt naming any finds it.
    Column("provider", String(64), primary_key=True),
    Column("provider_message_id", String(128), primary_key=True),
    Column("message_id", String(26), ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Index("ix_message_provider_ids_message_id", "message_id"),
)

message_events = Table(
    "message_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", String(26), ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("source", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("changed", Boolean(), nullable=False),
    Column("provider_status", String(64)),
    Column("error_code", String(64)),
    Column("error_message", Text()),
    Column("failure_reason", String(32)),
    Column("detail", JSON(), nullable=False),
    Column("occurred_at", DateTime(), nullable=False),
    Column("recorded_at", DateTime(), nullable=False),
    Index("ix_message_events_message_id", "message_id", "id"),
    # Moves to the next provider of a route, by time: what the failover alert counts. Partial, so
    # it holds only those few events.
    Index(
        "ix_message_events_failed_over",
        "occurred_at",
        postgresql_where=text("type = 'failed_over'"),
        sqlite_where=text("type = 'failed_over'"),
    ),
)

webhook_log = Table(
    "webhook_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("received_at", DateTime(), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("event", String(64), nullable=False),
    Column("url", Text(), nullable=False),
    Column("headers", JSON(), nullable=False),
    # A refused request's body is kept only up to a small cap; its size and hash always.
    Column("body", LargeBinary(), nullable=False),
    Column("body_size", Integer(), nullable=False, server_default="0"),
    Column("body_sha256", String(64)),
    Column("remote_ip", String(64)),
    Column("verified", Boolean()),
    Column("processed", Boolean(), nullable=False, server_default=false()),
    Column("response_status", Integer()),
    Column("error", Text()),
    Column("message_id", String(26)),
    Column("reports", Integer(), nullable=False, server_default="0"),
    Column("unmatched", Integer(), nullable=False, server_default="0"),
    Column("inbound", Integer(), nullable=False, server_default="0"),
    Column("duration_ms", Float()),
    Index("ix_webhook_log_provider", "provider", "id"),
    Index("ix_webhook_log_message_id", "message_id"),
    Index("ix_webhook_log_received_at", "received_at"),
    # The entries not processed (failed, refused, or cut short), newest first: few among many.
    Index(
        "ix_webhook_log_unprocessed",
        "id",
        postgresql_where=text("processed IS false"),
        sqlite_where=text("processed IS 0"),
    ),
)

inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("provider", String(64), nullable=False),
    Column("provider_message_id", String(128)),
    Column("from", String(64), nullable=False),
    Column("to", String(64)),
    Column("body", Text(), nullable=False),
    Column("sent_at", DateTime()),
    Column("received_at", DateTime(), nullable=False),
    Column("raw", JSON(), nullable=False),
    Column("webhook_log_id", BigInteger()),
    Column("redacted_at", DateTime()),
    # Providers resend webhooks: the same inbound message is stored once.
    Index("ix_inbound_messages_provider_message", "provider", "provider_message_id", unique=True),
    Index("ix_inbound_messages_from", "from", "id"),
    Index("ix_inbound_messages_to", "to", "id"),
    Index("ix_inbound_messages_received_at", "received_at"),
)

gateways = Table(
    "gateways",
    metadata,
    # One row per Android gateway (a ``kind = "gateway"`` provider), kept up to date by its polls.
    Column("name", String(64), primary_key=True),
    Column("first_poll_at", DateTime(), nullable=False),
    Column("last_poll_at", DateTime(), nullable=False),
    Column("last_address", String(64)),
    Column("polls", BigInteger(), nullable=False, server_default="0"),
    Column("inbound_received", BigInteger(), nullable=False, server_default="0"),
    Column("updates_received", BigInteger(), nullable=False, server_default="0"),
    Column("messages_handed_over", BigInteger(), nullable=False, server_default="0"),
)

opt_outs = Table(
    "opt_outs",
    metadata,
    # An address that asked not to be sent to on a channel: by everyone (scope '*') or by one of
    # our senders.
    Column("id", String(26), primary_key=True),
    Column("channel", String(16), nullable=False, server_default="sms"),
    Column("address", String(ADDRESS_LENGTH), nullable=False),
    Column("scope", String(ADDRESS_LENGTH), nullable=False),
    Column("source", String(16), nullable=False),
    Column("keyword", String(32)),
    Column("inbound_id", String(26)),
    Column("note", Text()),
    Column("created_at", DateTime(), nullable=False),
    Index("ix_opt_outs_channel_address_scope", "channel", "address", "scope", unique=True),
)

callbacks = Table(
    "callbacks",
    metadata,
    # The outbox of signed callbacks to client applications, written in the same transaction as
    # the change each one reports.
    Column("id", String(26), primary_key=True),
    Column("api_key_id", String(26)),
    Column("message_id", String(26)),
    Column("inbound_id", String(26)),
    Column("type", String(32), nullable=False),
    Column("url", Text(), nullable=False),
    Column("payload", JSON(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("max_attempts", Integer(), nullable=False),
    Column("next_attempt_at", DateTime(), nullable=False),
    Column("lease_expires_at", DateTime()),
    Column("last_status_code", Integer()),
    Column("last_error", Text()),
    Column("created_at", DateTime(), nullable=False),
    Column("updated_at", DateTime(), nullable=False),
    Column("delivered_at", DateTime()),
    Index(
        "ix_callbacks_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    Index("ix_callbacks_message_id", "message_id", "id"),
    Index("ix_callbacks_status", "status", "id"),
)

alerts = Table(
    "alerts",
    metadata,
    # A condition an alert rule found (services/alerts.py): raised once, open while it holds,
    # resolved when it clears.
    Column("id", String(26), primary_key=True),
    Column("rule", String(32), nullable=False),
    # What it is about: a provider, a gateway or a batch; '' for the whole installation.
    Column("subject", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("raised_at", DateTime(), nullable=False),
    Column("resolved_at", DateTime()),
    Column("last_checked_at", DateTime(), nullable=False),
    # The figure last measured and the rule's threshold it is compared with.
    Column("value", Float(), nullable=False),
    Column("threshold", Float(), nullable=False),
    Column("detail", JSON(), nullable=False),
    Column("message", Text(), nullable=False),
    # At most one open alert per rule and subject: a raise is an insert that does nothing when
    # one is open, so several workers raise it once.
    Index(
        "ix_alerts_open",
        "rule",
        "subject",
        unique=True,
        postgresql_where=text("resolved_at IS NULL"),
        sqlite_where=text("resolved_at IS NULL"),
    ),
)

operators = Table(
    "operators",
    metadata,
    # The people who sign in to the dashboard (``tidings users create``); API keys are not logins.
    Column("id", String(26), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    # Argon2id, in the encoded form that carries its own salt and parameters.
    Column("password_hash", Text(), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("last_sign_in_at", DateTime()),
    Column("disabled_at", DateTime()),
)

operator_sessions = Table(
    "operator_sessions",
    metadata,
    # A signed-in browser: only the SHA-256 of its cookie is kept, so a copy of the database
    # signs nobody in.
    Column("id", String(64), primary_key=True),
    Column(
        "operator_id",
        String(26),
        ForeignKey("operators.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    # The token every form of this session carries (CSRF).
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(), nullable=False),
    Column("last_seen_at", DateTime(), nullable=False),
    Column("expires_at", DateTime(), nullable=False, index=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    # Who did what from the dashboard: cancels, replays, opt-outs, signing in and out.
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("occurred_at", DateTime(), nullable=False),
    Column("operator", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(320), nullable=False),
    Column("detail", JSON(), nullable=False),
    Column("address", String(64)),
)
