"""Admin-scoped management of merchants, API keys and any merchant's templates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from taskmill.api.auth import Admin
from taskmill.api.paging import Cursor, decode_cursor, keyset_page
from taskmill.api.responses import AUTHENTICATED, BODY, WRITE, errors
from taskmill.api.schemas import (
    AdminTemplateOut,
    AdminTemplatePage,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    MerchantCreate,
    MerchantOut,
)
from taskmill.core.tenants import ApiKey

router = APIRouter(tags=["admin"])


def key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        merchant_id=key.merchant_id,
        name=key.name,
        prefix=key.prefix,
        scopes=sorted(key.scopes),
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
    )


@router.post(
    "/merchants", status_code=201, response_model=MerchantOut, responses=errors(409, *WRITE, *BODY)
)
async def create_merchant(body: MerchantCreate, admin: Admin) -> MerchantOut:
    return MerchantOut.model_validate(await admin.admin().create_merchant(body.name))


@router.get("/merchants", response_model=list[MerchantOut], responses=errors(*AUTHENTICATED))
async def list_merchants(admin: Admin) -> list[MerchantOut]:
    return [MerchantOut.model_validate(m) for m in await admin.admin().list_merchants()]


@router.post(
    "/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    responses=errors(404, 409, *WRITE, *BODY),
)
async def create_api_key(body: ApiKeyCreate, admin: Admin) -> ApiKeyCreated:
    """Issue a key; the response holds the secret, which is never shown again."""
    issued = await admin.admin().issue_key(
        body.merchant_id, body.name, body.scopes, body.expires_at
    )
    return ApiKeyCreated(key=key_out(issued.key), secret=issued.plaintext)


@router.get("/api-keys", response_model=list[ApiKeyOut], responses=errors(*AUTHENTICATED))
async def list_api_keys(
    admin: Admin, merchant_id: Annotated[str | None, Query(max_length=36)] = None
) -> list[ApiKeyOut]:
    return [key_out(k) for k in await admin.admin().list_keys(merchant_id)]


@router.post(
    "/api-keys/{key_id}/revoke", response_model=ApiKeyOut, responses=errors(404, 409, *WRITE)
)
async def revoke_api_key(key_id: str, admin: Admin) -> ApiKeyOut:
    return key_out(await admin.admin().revoke_key(key_id))


@router.get("/admin/templates", response_model=AdminTemplatePage, responses=errors(*AUTHENTICATED))
async def list_templates(
    admin: Admin,
    merchant_id: Annotated[str | None, Query(max_length=36)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> AdminTemplatePage:
    """Every merchant's templates (or one merchant's), oldest first, keyset pages."""
    after = decode_cursor(cursor) if cursor else None
    found = await admin.admin().list_templates(merchant_id, limit + 1, after)
    page, next_cursor = keyset_page(found, limit)
    return AdminTemplatePage(
        items=[AdminTemplateOut.model_validate(t) for t in page], next_cursor=next_cursor
    )


@router.get(
    "/admin/templates/{template_id}",
    response_model=AdminTemplateOut,
    responses=errors(404, *AUTHENTICATED),
)
async def get_template(template_id: str, admin: Admin) -> AdminTemplateOut:
    return AdminTemplateOut.model_validate(await admin.admin().get_template(template_id))


@router.post(
    "/admin/templates/{template_id}/pause",
    response_model=AdminTemplateOut,
    responses=errors(404, *WRITE),
)
async def pause_template(template_id: str, admin: Admin) -> AdminTemplateOut:
    """Switch any merchant's template off (its schedule is not evaluated, so a broken
    one stops too); ``last_error`` tells its owner why."""
    return AdminTemplateOut.model_validate(await admin.admin().pause_template(template_id))


@router.delete("/admin/templates/{template_id}", status_code=204, responses=errors(404, *WRITE))
async def delete_template(template_id: str, admin: Admin) -> Response:
    """Delete any merchant's template; the jobs it already created stay."""
    await admin.admin().delete_template(template_id)
    return Response(status_code=204)
