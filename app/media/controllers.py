"""Media endpoints (seed plan 4.2): presigned and multipart uploads, direct uploads, processing, avatars."""

from __future__ import annotations

import os
from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED

from app.assets import service as assets_service
from app.lib.deps import ClientsDep
from app.lib.openapi import form, raises
from app.lib.params import TokenIdPath
from app.lib.security import current_principal, owner_or_admin, requires_permission
from app.media import service
from app.media.schemas import (
    DOCUMENT_CATEGORIES,
    AvatarJob,
    AvatarPromotion,
    CompletedUpload,
    DirectUploadResult,
    MultipartComplete,
    MultipartUpload,
    PresignedPost,
    ProcessingJob,
    UploadRequest,
)

# Several files of up to DIRECT_UPLOAD_MAX_BYTES each, plus the form's own overhead; the body is
# streamed to spooled temporary files and refused (413) once it passes this.
DIRECT_BODY_MAX_BYTES = 3 * service.DIRECT_UPLOAD_MAX_BYTES
MultipartForm = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)]

# The route's {tokenId} asset belongs to the caller, or the caller is an admin.
owns_asset = owner_or_admin(assets_service.owner_of, path_param="tokenId", missing="asset_not_found")

# The refusals of staging an upload (a presigned POST or a multipart upload).
STAGING_ERRORS = {
    400: ["invalid_category", "token_id_required"],
    403: ["not_owner"],
    404: ["asset_not_found"],
    409: ["upload_limit_reached"],
    413: ["file_too_large"],
    415: ["unsupported_content_type"],
}
# What a direct upload's form holds: the files (read whatever their part's name), and for documents
# their category and whether they are verification documents.
FILES = {
    "type": "array",
    "items": {"type": "string", "format": "binary"},
    "minItems": 1,
    "maxItems": service.DIRECT_UPLOAD_MAX_FILES,
}
IMAGES_FORM = {"type": "object", "required": ["files"], "properties": {"files": FILES}}
DOCUMENTS_FORM = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "files": FILES,
        "category": {"enum": list(DOCUMENT_CATEGORIES), "description": "certificates when absent"},
        "verification": {"enum": ["true", "false"], "description": "a verification document (admins)"},
    },
}
# The refusals of a direct upload (a multipart form of files); `bad_request` is a malformed form.
DIRECT_ERRORS = {
    400: ["bad_request", "no_files", "too_many_files"],
    409: ["upload_limit_reached"],
    413: ["file_too_large"],
    415: ["type_mismatch", "unsupported_content_type", "unsupported_format"],
}


def _incoming(form: dict[str, Any]) -> list[service.IncomingFile]:
    files = []
    for value in form.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, UploadFile):
                item.file.seek(0, os.SEEK_END)
                size = item.file.tell()
                item.file.seek(0)
                files.append(
                    service.IncomingFile(item.filename or "file", item.content_type, item.file, size)
                )
    return files


def _form_text(form: dict[str, Any], name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


def _form_flag(form: dict[str, Any], name: str) -> bool:
    return (_form_text(form, name) or "").lower() in ("1", "true", "yes", "on")


class StorageController(Controller):
    path = "/api/storage"
    tags = ["media"]
    guards = [requires_permission("media:write")]

    @post(
        "/presigned-url",
        status_code=HTTP_201_CREATED,
        opt=raises({**STAGING_ERRORS, 400: [*STAGING_ERRORS[400], "multipart_required"]}),
    )
    async def presigned_url(
        self, request: Request, clients: ClientsDep, data: JSONBody[UploadRequest]
    ) -> PresignedPost:
        """A presigned POST form for one upload straight to S3 (size, type and key fixed by its policy)."""
        return await service.presign_upload(clients.storage, current_principal(request), data)

    @post(
        "/multipart-uploads",
        status_code=HTTP_201_CREATED,
        opt=raises({**STAGING_ERRORS, 400: [*STAGING_ERRORS[400], "multipart_not_allowed"]}),
    )
    async def start_multipart(
        self, request: Request, clients: ClientsDep, data: JSONBody[UploadRequest]
    ) -> MultipartUpload:
        """Start a multipart upload (files over 100 MB): one presigned PUT URL per part."""
        return await service.start_multipart(clients.storage, current_principal(request), data)

    @post(
        "/multipart-uploads/complete",
        opt=raises(
            {
                403: ["not_uploader"],
                404: ["upload_not_found"],
                409: ["empty_upload"],
                413: ["file_too_large"],
                503: ["query_timeout"],
            }
        ),
    )
    async def complete_multipart(
        self, request: Request, clients: ClientsDep, data: JSONBody[MultipartComplete]
    ) -> CompletedUpload:
        """Complete a multipart upload; refused (413) when the parts add up to more than allowed."""
        return await service.complete_multipart(
            clients.storage, current_principal(request), data.key, data.upload_id
        )


class AssetMediaController(Controller):
    path = "/api/assets"
    tags = ["media"]
    guards = [requires_permission("media:write")]

    @post(
        "/{tokenId:int}/images",
        status_code=HTTP_201_CREATED,
        request_max_body_size=DIRECT_BODY_MAX_BYTES,
        guards=[owns_asset],
        opt={**raises(DIRECT_ERRORS), **form(IMAGES_FORM)},
    )
    async def upload_images(
        self, request: Request, clients: ClientsDep, tokenId: TokenIdPath, data: MultipartForm
    ) -> DirectUploadResult:
        """Upload several images (multipart form); each is sniffed, stored as an original and queued."""
        return await service.upload_images(clients, current_principal(request), tokenId, _incoming(data))

    @post(
        "/{tokenId:int}/documents",
        status_code=HTTP_201_CREATED,
        request_max_body_size=DIRECT_BODY_MAX_BYTES,
        guards=[owns_asset],
        opt=raises(
            {
                **DIRECT_ERRORS,
                400: [*DIRECT_ERRORS[400], "invalid_category"],
                413: ["file_too_large", "too_large"],
                415: [*DIRECT_ERRORS[415], "invalid_json", "json_not_utf8", "json_too_deep"],
                503: ["document_check_failed"],
            }
        )
        | form(DOCUMENTS_FORM),
    )
    async def upload_documents(
        self, request: Request, clients: ClientsDep, tokenId: TokenIdPath, data: MultipartForm
    ) -> DirectUploadResult:
        """Upload documents (PDF, or JSON for metadata); form fields `category` and `verification`."""
        return await service.upload_documents(
            clients.storage,
            current_principal(request),
            tokenId,
            _incoming(data),
            category=_form_text(data, "category"),
            verification=_form_flag(data, "verification"),
        )

    @post("/{tokenId:int}/process-media", status_code=HTTP_202_ACCEPTED, guards=[owns_asset])
    async def process_media(self, clients: ClientsDep, tokenId: TokenIdPath) -> ProcessingJob:
        """Queue the processing of the asset's uploads; poll `statusUrl` for the outcome."""
        return await service.request_processing(clients, tokenId)


class UserAvatarController(Controller):
    path = "/api/users"
    tags = ["media"]
    guards = [requires_permission("media:write")]

    @post(
        "/me/avatar",
        status_code=HTTP_202_ACCEPTED,
        opt=raises(
            {
                400: ["invalid_upload_key", "not_an_avatar_upload"],
                403: ["not_owner"],
                404: ["upload_not_found"],
                429: ["avatar_queue_full", "too_many_avatar_jobs"],
            }
        ),
    )
    async def update_avatar(
        self, request: Request, clients: ClientsDep, data: JSONBody[AvatarPromotion]
    ) -> AvatarJob:
        """Make a staged avatar upload your avatar once a job has checked and re-encoded it."""
        return await service.request_avatar(clients, current_principal(request), data.key)
