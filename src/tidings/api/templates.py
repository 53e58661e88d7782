"""``/v1/templates``: stored, versioned templates that batches name by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from tidings.api.auth import Reader, Sender
from tidings.api.common import (
    AUTHENTICATED,
    JSON_BODY,
    PARAMETERS,
    ServiceDep,
    errors,
    id_cursor,
    json_response,
)
from tidings.api.schemas import TemplateIn, TemplateOut, TemplatePage, TemplateUpdate, template_json
from tidings.errors import BadRequest, Conflict, InvalidInput, InvalidTemplate, NotFound

router = APIRouter(tags=["templates"])

PATH = "/v1/templates"
TemplateId = Annotated[str, Path(max_length=64)]


@router.post(
    PATH,
    operation_id="createTemplate",
    status_code=201,
    response_model=TemplateOut,
    responses=errors(*AUTHENTICATED, *JSON_BODY, InvalidInput, InvalidTemplate, Conflict),
)
async def create_template(payload: TemplateIn, _key: Sender, service: ServiceDep) -> Response:
    """Store a template at version 1: an SMS ``body``, or an email ``subject``, ``outer`` layout and
    ``inner`` body. It must compile; its name must be free (409)."""
    parts = payload.model_dump(include={"body", "subject", "outer", "inner"})
    row = await service.templates.create(payload.name, payload.channel, parts)
    return json_response(template_json(row), 201)


@router.get(
    PATH,
    operation_id="listTemplates",
    response_model=TemplatePage,
    responses=errors(*AUTHENTICATED, *PARAMETERS, BadRequest),
)
async def list_templates(
    _key: Reader,
    service: ServiceDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Templates at their latest version, newest first."""
    page, next_cursor = await service.templates.list(cursor=id_cursor(cursor), limit=limit)
    return json_response({"data": [template_json(r) for r in page], "next_cursor": next_cursor})


@router.get(
    PATH + "/{template_id}",
    operation_id="getTemplate",
    response_model=TemplateOut,
    responses=errors(*AUTHENTICATED, *PARAMETERS, NotFound),
)
async def get_template(
    template_id: TemplateId,
    _key: Reader,
    service: ServiceDep,
    version: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
) -> Response:
    """A template at its latest version, or at ``version`` (every version is kept)."""
    return json_response(template_json(await service.templates.get(template_id, version)))


@router.put(
    PATH + "/{template_id}",
    operation_id="updateTemplate",
    response_model=TemplateOut,
    responses=errors(*AUTHENTICATED, *JSON_BODY, InvalidInput, InvalidTemplate, NotFound, Conflict),
)
async def update_template(
    template_id: TemplateId, payload: TemplateUpdate, _key: Sender, service: ServiceDep
) -> Response:
    """Store the template's next version (messages keep naming the version they came from)."""
    parts = payload.model_dump(include={"body", "subject", "outer", "inner"})
    return json_response(template_json(await service.templates.update(template_id, payload.name, parts)))


@router.delete(
    PATH + "/{template_id}",
    operation_id="deleteTemplate",
    status_code=204,
    response_class=Response,
    responses=errors(*AUTHENTICATED, *PARAMETERS, NotFound),
)
async def delete_template(template_id: TemplateId, _key: Sender, service: ServiceDep) -> Response:
    """Delete a template; batches can no longer name it (its versions stay for its messages)."""
    await service.templates.delete(template_id)
    return Response(status_code=204)
