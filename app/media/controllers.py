"""Media endpoints (seed plan 4.2): presigned and multipart uploads, direct uploads, processing."""

from __future__ import annotations

import os
from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED

from app.assets import service as assets_service
from app.lib.deps import ClientsDep
from app.lib.errors import BadRequest
from app.lib.security import current_principal, owner_or_admin, requires_permission
from app.media import schemas, service
from app.media.schemas import (
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


# The route's {tokenId} asset belongs to the caller, or the caller is an admin.
owns_asset = owner_or_admin(assets_service.owner_of, path_param="tokenId")


class StorageController(Controller):
    path = "/api/storage"
    tags = ["media"]
    guards = [requires_permission("media:write")]

    @post("/presigned-url", status_code=HTTP_201_CREATED)
    async def presigned_url(
        self, request: Request, clients: ClientsDep, data: JSONBody[UploadRequest]
    ) -> PresignedPost:
        """A presigned POST form for one upload straight to S3 (size, type and key fixed by its policy)."""
        form = await service.presign_upload(clients.storage, current_principal(request), data)
        return PresignedPost(**form)

    @post("/multipart-uploads", status_code=HTTP_201_CREATED)
    async def start_multipart(
        self, request: Request, clients: ClientsDep, data: JSONBody[UploadRequest]
    ) -> MultipartUpload:
        """Start a multipart upload (files over 100 MB): one presigned PUT URL per part."""
        started = await service.start_multipart(clients.storage, current_principal(request), data)
        return MultipartUpload(**{**started, "parts": [schemas.MultipartPart(**p) for p in started["parts"]]})

    @post("/multipart-uploads/complete")
    async def complete_multipart(
        self, request: Request, clients: ClientsDep, data: JSONBody[MultipartComplete]
    ) -> CompletedUpload:
        """Complete a multipart upload; refused (413) when the parts add up to more than allowed."""
        done = await service.complete_multipart(
            clients.storage, current_principal(request), data.key, data.uploadId
        )
        return CompletedUpload(**done)


class AssetMediaController(Controller):
    path = "/api/assets"
    tags = ["media"]
    guards = [requires_permission("media:write")]

    @post(
        "/{tokenId:int}/images",
        status_code=HTTP_201_CREATED,
        request_max_body_size=DIRECT_BODY_MAX_BYTES,
        guards=[owns_asset],
    )
    async def upload_images(
        self, request: Request, clients: ClientsDep, tokenId: FromPath[int], data: MultipartForm
    ) -> DirectUploadResult:
        """Upload several images (multipart form); each is sniffed, stored as an original and queued."""
        principal = current_principal(request)
        stored = await service.store_direct(clients.storage, principal, tokenId, "image", _incoming(data))
        job_id, _ = await service.enqueue_processing(clients, tokenId)
        return DirectUploadResult(
            files=[schemas.stored_file(f) for f in stored],
            jobId=job_id,
            statusUrl=schemas.job_status_url(job_id),
        )

    @post(
        "/{tokenId:int}/documents",
        status_code=HTTP_201_CREATED,
        request_max_body_size=DIRECT_BODY_MAX_BYTES,
        guards=[owns_asset],
    )
    async def upload_documents(
        self, request: Request, clients: ClientsDep, tokenId: FromPath[int], data: MultipartForm
    ) -> DirectUploadResult:
        """Upload documents (PDF, or JSON for metadata); form fields `category` and `verification`."""
        category = _form_text(data, "category") or "certificates"
        if category not in ("certificates", "legal", "metadata"):
            raise BadRequest("category is certificates, legal or metadata", code="invalid_category")
        verification = (_form_text(data, "verification") or "").lower() in ("1", "true", "yes", "on")
        stored = await service.store_direct(
            clients.storage,
            current_principal(request),
            tokenId,
            "document",
            _incoming(data),
            category=category,
            verification=verification,
        )
        return DirectUploadResult(files=[schemas.stored_file(f) for f in stored])

    @post("/{tokenId:int}/process-media", status_code=HTTP_202_ACCEPTED, guards=[owns_asset])
    async def process_media(self, clients: ClientsDep, tokenId: FromPath[int]) -> ProcessingJob:
        """Queue the processing of the asset's uploads; poll `statusUrl` for the outcome."""
        job_id, pending = await service.enqueue_processing(clients, tokenId)
        return ProcessingJob(jobId=job_id, statusUrl=schemas.job_status_url(job_id), pending=pending)


class UserAvatarController(Controller):
    path = "/api/users"
    tags = ["media"]
    guards = [requires_permission("media:write")]

    @post("/me/avatar", status_code=HTTP_202_ACCEPTED)
    async def update_avatar(
        self, request: Request, clients: ClientsDep, data: JSONBody[AvatarPromotion]
    ) -> AvatarJob:
        """Make a staged avatar upload your avatar once a job has checked and re-encoded it."""
        job_id = await service.enqueue_avatar(clients, current_principal(request), data.key)
        return AvatarJob(jobId=job_id, statusUrl=schemas.job_status_url(job_id))
