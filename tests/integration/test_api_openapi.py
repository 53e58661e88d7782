"""The OpenAPI document tells the truth: what each operation is called, needs, takes and answers.

(That the API answers what the document says is ``test_api_schema.py``'s job.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tests.conftest import make_settings
from tidings import errors
from tidings.api import callbacks, opt_outs, schemas
from tidings.api.app import create_app
from tidings.services import Service

OPERATIONS = {
    ("get", "/healthz"): "getHealth",
    ("post", "/v1/messages"): "sendMessage",
    ("get", "/v1/messages"): "listMessages",
    ("get", "/v1/messages/{message_id}"): "getMessage",
    ("post", "/v1/messages/{message_id}/cancel"): "cancelMessage",
    ("post", "/v1/batches"): "sendBatch",
    ("get", "/v1/batches"): "listBatches",
    ("get", "/v1/batches/{batch_id}"): "getBatch",
    ("post", "/v1/batches/{batch_id}/cancel"): "cancelBatch",
    ("post", "/v1/templates"): "createTemplate",
    ("get", "/v1/templates"): "listTemplates",
    ("get", "/v1/templates/{template_id}"): "getTemplate",
    ("put", "/v1/templates/{template_id}"): "updateTemplate",
    ("delete", "/v1/templates/{template_id}"): "deleteTemplate",
    ("post", "/unsubscribe/{message_id}/{signature}"): "unsubscribe",
    ("get", "/unsubscribe/{message_id}/{signature}"): "unsubscribePage",
    ("post", "/webhooks/{kind}/{name}/{event}"): "receiveWebhook",
    ("post", "/api/sms/webhook/delivery-status"): "receiveOrangeDeliveryWebhook",
    ("post", "/api/sms/webhook/inbound-message"): "receiveOrangeInboundWebhook",
    ("get", "/api/sms"): "checkGateway",
    ("post", "/api/sms"): "pollGateway",
    ("get", "/v1/gateways"): "listGateways",
    ("get", "/v1/inbound"): "listInbound",
    ("get", "/v1/opt-outs"): "listOptOuts",
    ("post", "/v1/opt-outs"): "addOptOut",
    ("delete", "/v1/opt-outs/{number}"): "removeOptOut",
    ("get", "/v1/log"): "listLog",
    ("get", "/v1/stats"): "getStats",
    ("get", "/v1/stats/webhooks"): "getWebhookStats",
    ("get", "/v1/callbacks"): "listCallbacks",
    ("post", "/v1/callbacks/{callback_id}/retry"): "retryCallback",
    ("get", "/v1/callback-settings"): "getCallbackSettings",
    ("put", "/v1/callback-settings"): "setCallbackSettings",
    ("post", "/v1/callback-settings/rotate-secret"): "rotateCallbackSecret",
    ("get", "/v1/alerts"): "listAlerts",
}
"""Every operation and its id: client generators name their methods after these, so they stay."""

UNAUTHENTICATED = {"/healthz", "/api/sms"}
"""Paths that need no API key (besides the webhooks): the gateway has its own credentials."""

STABLE_CODES = {
    cls.code
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.TidingsError) and cls.__module__ == errors.__name__
}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document of an app with every kind of route: Orange's legacy paths and a gateway."""
    folder: Path = tmp_path_factory.mktemp("openapi")
    settings = make_settings(
        f"sqlite:///{folder / 'tidings.db'}",
        providers={
            "fake": {"kind": "fake"},
            "orange": {
                "kind": "orange",
                "client_id": "id",
                "client_secret": "secret",
                "sender": "tel:+2250000000000",
                "webhook_allow_ips": ["127.0.0.0/8"],
            },
            "phone": {"kind": "gateway", "username": "phone", "password": "pw"},
        },
    )
    # The document is built without the database or the providers being started.
    document: dict[str, Any] = create_app(Service(settings)).openapi()
    return document


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    found: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return found


def test_every_operation_has_its_stable_id(document: dict[str, Any]) -> None:
    found = {(method, path): op.get("operationId") for method, path, op in operations(document)}

    assert found == OPERATIONS


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(document)]

    assert len(ids) == len(set(ids))


def test_authenticated_operations_declare_the_bearer_scheme_and_their_401(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    authenticated = 0
    for method, path, op in operations(document):
        if path.startswith("/v1/"):
            authenticated += 1
            # A batch may instead be signed with the key's signing secret (either one will do).
            alternatives = [{"signedRequest": []}] if (method, path) == ("post", "/v1/batches") else []
            assert op.get("security") == [{"bearerAuth": []}, *alternatives], (method, path)
            error = op["responses"]["401"]["content"]["application/json"]
            assert resolve(document, error["schema"])["properties"]["error"]["properties"]["code"][
                "enum"
            ] == ["unauthorized"]
        else:
            assert {"bearerAuth": []} not in op.get("security", []), (method, path)
    assert authenticated == sum(1 for _method, path in OPERATIONS if path.startswith("/v1/"))
    signed = document["components"]["securitySchemes"]["signedRequest"]
    assert (signed["type"], signed["in"], signed["name"]) == ("apiKey", "header", "Tidings-Signature")


def test_no_operation_takes_the_authorization_header_as_a_parameter(document: dict[str, Any]) -> None:
    # Swagger UI ignores a header parameter named Authorization: the scheme carries it instead.
    for method, path, op in operations(document):
        names = [p["name"].lower() for p in op.get("parameters", [])]
        assert "authorization" not in names, (method, path)


def test_the_gateway_poll_declares_basic_credentials(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["gatewayBasic"]["scheme"] == "basic"
    assert document["paths"]["/api/sms"]["post"]["security"] == [{"gatewayBasic": []}]


def test_fastapi_validation_error_is_nowhere(document: dict[str, Any]) -> None:
    text = json.dumps(document)

    assert "HTTPValidationError" not in text
    assert "ValidationError" not in document["components"]["schemas"]


def test_every_error_answer_is_the_error_contract_with_the_codes_of_its_status(
    document: dict[str, Any],
) -> None:
    checked = 0
    for method, path, op in operations(document):
        if path in ("/healthz", "/api/sms"):
            continue  # healthz answers its own 503; the gateway's app has its own shape
        for status, answer in op["responses"].items():
            if int(status) < 400:
                continue
            checked += 1
            media = answer["content"]["application/json"]
            codes = media["schema"]["properties"]["error"]["properties"]["code"]["enum"]
            assert codes and set(codes) <= STABLE_CODES, (method, path, status)
            assert set(media["examples"]) == set(codes), (method, path, status)
            for code, example in media["examples"].items():
                assert schemas.ErrorOut.model_validate(example["value"]).error.code == code
            assert {
                cls.http_status for cls in vars(errors).values() if getattr(cls, "code", None) in codes
            } >= {int(status)}, (method, path, status)
    assert checked > 60


def test_operations_that_can_refuse_their_input_document_422_validation_error(
    document: dict[str, Any],
) -> None:
    for method, path, op in operations(document):
        params = [
            p
            for p in op.get("parameters", [])
            if p["schema"] != {"type": "string", "title": p["schema"].get("title")}
        ]
        if path.startswith("/api/sms") or (not params and "requestBody" not in op):
            continue
        codes = op["responses"]["422"]["content"]["application/json"]["schema"]["properties"]["error"][
            "properties"
        ]
        assert "validation_error" in codes["code"]["enum"], (method, path)


def test_every_success_answer_has_a_schema(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        successes = {status: answer for status, answer in op["responses"].items() if status.startswith("2")}
        assert successes, (method, path)
        for status, answer in successes.items():
            if status == "204":
                assert "content" not in answer
                continue
            for media_type, media in answer["content"].items():
                assert media.get("schema"), (method, path, status, media_type)
                assert media["schema"] != {}, (method, path, status, media_type)


def test_adding_an_opt_out_documents_201_and_200(document: dict[str, Any]) -> None:
    answers = document["paths"]["/v1/opt-outs"]["post"]["responses"]

    assert answers["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OptOutAdded"
    }
    assert answers["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OptOutAdded"
    }


def test_sending_documents_202_and_the_idempotent_200(document: dict[str, Any]) -> None:
    answers = document["paths"]["/v1/messages"]["post"]["responses"]

    assert set(answers) >= {"200", "202"}
    assert "200" not in document["paths"]["/v1/opt-outs/{number}"]["delete"]["responses"]


def test_503_documents_retry_after(document: dict[str, Any]) -> None:
    answer = document["paths"]["/v1/messages"]["post"]["responses"]["503"]

    assert "Retry-After" in answer["headers"]
    assert answer["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"][
        "enum"
    ] == ["database_unavailable"]


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties", {})
    return props


def _types(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The alternatives of a property (``X | None`` is an anyOf with null)."""
    return [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]


def test_timestamps_are_date_time(document: dict[str, Any]) -> None:
    found = 0
    for name, schema in document["components"]["schemas"].items():
        for prop, spec in _properties(schema).items():
            if prop.endswith("_at") or prop in ("at", "send_at"):
                found += 1
                assert all(t.get("format") == "date-time" for t in _types(spec)), (name, prop)
    for method, path, op in operations(document):
        for param in op.get("parameters", []):
            if param["name"] in ("since", "until", "created_after", "created_before"):
                found += 1
                assert all(t.get("format") == "date-time" for t in _types(param["schema"])), (method, path)
    assert found > 30


def test_statuses_are_enums(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    assert components["Status"]["enum"] == [
        "scheduled",
        "pending",
        "sending",
        "sent",
        "failed",
        "delivered",
        "cancelled",
    ]
    status_ref = {"$ref": "#/components/schemas/Status"}
    assert components["MessageOut"]["properties"]["status"] == status_ref
    assert components["EventOut"]["properties"]["status"]["$ref"] == status_ref["$ref"]
    assert status_ref in components["LogEntry"]["properties"]["status"]["anyOf"]
    assert components["CallbackOut"]["properties"]["status"]["enum"] == [
        "pending",
        "delivering",
        "delivered",
        "failed",
    ]
    params = {p["name"]: p for p in document["paths"]["/v1/messages"]["get"]["parameters"]}
    assert {"type": "array", "items": status_ref, "maxItems": 7} in params["status"]["schema"]["anyOf"]
    params = {p["name"]: p for p in document["paths"]["/v1/callbacks"]["get"]["parameters"]}
    assert {"type": "string", "enum": ["pending", "delivering", "delivered", "failed"]} in params["status"][
        "schema"
    ]["anyOf"]


def test_every_model_in_the_document_has_its_examples_whole(document: dict[str, Any]) -> None:
    models = {model.__name__: model for model in MODELS}
    for name, schema in document["components"]["schemas"].items():
        if "enum" in schema:
            continue  # Status, Channel, Encoding
        assert schema.get("examples"), name
        # Nulls included: FastAPI's encoder drops them, which leaves required fields out.
        assert schema["examples"] == models[name].model_json_schema()["examples"], name


def test_the_gateway_poll_body_is_documented_with_examples(document: dict[str, Any]) -> None:
    body = document["paths"]["/api/sms"]["post"]["requestBody"]["content"]["application/json"]["schema"]

    assert body["examples"] == schemas.GatewayPollIn.model_json_schema()["examples"]
    assert "$ref" not in json.dumps(body)


MODELS: list[type[BaseModel]] = [
    model
    for module in (schemas, opt_outs, callbacks)
    for model in vars(module).values()
    if isinstance(model, type)
    and issubclass(model, BaseModel)
    and model.__module__ == module.__name__
    and model is not schemas.RequestModel
]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_model_accepts_its_own_examples(model: type[BaseModel]) -> None:
    examples = model.model_json_schema().get("examples")

    assert examples, f"{model.__name__} has no examples"
    for example in examples:
        model.model_validate(example)
