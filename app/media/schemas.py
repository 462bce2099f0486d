"""Request and response bodies of the media endpoints (camelCase, as the seed's clients expect)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

Purpose = Literal["image", "document", "model", "video", "avatar"]
DocumentCategory = Literal["certificates", "legal", "metadata"]
Label = Annotated[str, Meta(min_length=1, max_length=64)]


class UploadRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What the browser is about to upload; the policy it gets back holds it to exactly this."""

    purpose: Purpose
    fileName: Annotated[str, Meta(min_length=1, max_length=255)]
    contentType: Annotated[str, Meta(min_length=1, max_length=127)]
    contentLength: Annotated[int, Meta(ge=1)]
    tokenId: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    category: DocumentCategory | None = None  # documents only; certificates by default
    verification: bool = False  # a verification document: admin-only
    label: Label | None = None  # primary, angle1, authenticity... (from fileName when absent)


class PresignedPost(msgspec.Struct):
    url: str
    fields: dict[str, str]
    key: str
    expiresAt: datetime


class MultipartPart(msgspec.Struct):
    partNumber: int
    url: str


class MultipartUpload(msgspec.Struct):
    key: str
    uploadId: str
    partSize: int
    parts: list[MultipartPart]
    expiresAt: datetime


class MultipartComplete(msgspec.Struct, forbid_unknown_fields=True):
    key: Annotated[str, Meta(min_length=1, max_length=1024)]
    uploadId: Annotated[str, Meta(min_length=1, max_length=1024)]


class CompletedUpload(msgspec.Struct):
    key: str
    size: int


class StoredFile(msgspec.Struct):
    label: str | None
    kind: str | None
    category: str | None
    contentType: str | None
    size: int | None
    status: str


class DirectUploadResult(msgspec.Struct):
    files: list[StoredFile]
    jobId: str | None = None
    statusUrl: str | None = None


class ProcessingJob(msgspec.Struct):
    jobId: str
    statusUrl: str
    pending: int


class AvatarPromotion(msgspec.Struct, forbid_unknown_fields=True):
    """The staged key the presigned-url call returned for an avatar upload."""

    key: Annotated[str, Meta(min_length=1, max_length=1024)]


class AvatarJob(msgspec.Struct):
    jobId: str
    statusUrl: str


def job_status_url(job_id: str) -> str:
    return f"/api/jobs/{job_id}"


def stored_file(entry: Any) -> StoredFile:
    return StoredFile(
        label=entry.label,
        kind=entry.kind,
        category=entry.category,
        contentType=entry.contentType,
        size=entry.size,
        status=entry.status,
    )
