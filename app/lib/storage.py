"""S3 storage: one client per process, the bucket it works on, and every object key the platform uses.

Bucket layout (seed plan 3.2.1) and naming (3.2.2); no other module builds a key by hand:

    images/originals/{tokenId}/{tokenId}_{label}_{timestamp}.{ext}       admin-only, as uploaded
    images/thumbnails/{tokenId}/{tokenId}_thumb_{sm|md|lg}.{jpg|webp}    public (the primary image)
    images/processed/{tokenId}/{tokenId}_{preview|watermarked}_{timestamp}.jpg   public
    images/processed/{tokenId}/{tokenId}_highres-{random}_{timestamp}.jpg   authenticated, metadata stripped
    images/processed/{tokenId}/cache/...                                  processing cache, 7 days
    documents/{tokenId}/{certificates|legal|metadata}/{tokenId}_{label}_{timestamp}.{ext}
    documents/{tokenId}/{certificates|legal|metadata}/{tokenId}_{label}_v{version}.{ext}   versioned
    models/{tokenId}/{tokenId}_{label}_{timestamp}.glb, models/{tokenId}/textures/...
    videos/{tokenId}/{tokenId}_{label}_{timestamp}.mp4
    user-uploads/{walletAddress}/profile/avatar.jpg                         public, re-encoded by media.avatar
    user-uploads/{walletAddress}/temp/{tokenId}_{purpose}_{timestamp}.{ext}   staged, 24 hours
    user-uploads/{walletAddress}/temp/avatar_{timestamp}.{ext}                 a staged avatar, 24 hours

A rendition carries the timestamp of the original it was made from, so processing the same original
again writes the same keys. A high-resolution key also carries 128 random bits, so it cannot be derived
from the public preview key beside it (the processing job reuses the key it recorded the first time).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import aioboto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.config import ConfigurationError, Settings
from app.lib.timeutil import utcnow

log = structlog.get_logger(__name__)

THUMBNAIL_SIZES = ("sm", "md", "lg")
PROCESSED_VARIANTS = ("preview", "watermarked")  # public; high-resolution keys come from highres_key()
DOCUMENT_CATEGORIES = ("certificates", "legal", "metadata")
TEMP_TTL = timedelta(hours=24)
CACHE_TTL = timedelta(days=7)
ARCHIVE_AFTER_DAYS = 90
PRESIGNED_GET_TTL_S = 300
PRESIGNED_POST_TTL_S = 900
MULTIPART_THRESHOLD = 100 * 1024 * 1024
MULTIPART_PART_SIZE = 64 * 1024 * 1024  # S3 needs >= 5 MiB per part and <= 10,000 parts
HASH_CHUNK_BYTES = 1024 * 1024  # hashing streams an object in pieces of this size
LIFECYCLE_TAG = "dv-lifecycle"  # object tag the temp and cache lifecycle rules filter on

_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "application/pdf": "pdf",
    "application/json": "json",
    "model/gltf-binary": "glb",
    "video/mp4": "mp4",
}
_WALLET = re.compile(r"^0x[0-9a-fA-F]{40}$")
_TEMP_KEY = re.compile(r"^user-uploads/0x[0-9a-fA-F]{40}/temp/")
_TEMP_OWNER = re.compile(r"^user-uploads/(0x[0-9a-fA-F]{40})/temp/")
_TEMP_TOKEN = re.compile(
    r"^user-uploads/0x[0-9a-fA-F]{40}/temp/(\d{1,19})_[a-z0-9-]+_\d{8}T\d{12}Z\.[a-z0-9]+$"
)
_AVATAR_TEMP_KEY = re.compile(r"^user-uploads/0x[0-9a-fA-F]{40}/temp/avatar_\d{8}T\d{12}Z\.(?:jpg|png|webp)$")
_CACHE_KEY = re.compile(r"^images/processed/\d+/cache/")
_TRANSIENT_CODES = frozenset(
    {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
)


# ---- keys ------------------------------------------------------------------------------------------


def extension_for(content_type: str) -> str:
    """File extension for an allowed content type."""
    return _EXTENSIONS[content_type]


def timestamp_token(at: datetime) -> str:
    """The `{timestamp}` of a file name: UTC, compact, to the microsecond so names do not collide."""
    return at.strftime("%Y%m%dT%H%M%S%fZ")


def slug(text: str | None, default: str = "file") -> str:
    """A label safe inside a key: lower-case letters, digits and '-', at most 40 characters."""
    value = re.sub(r"[^a-z0-9]+", "-", (text or "").lower()).strip("-")[:40].strip("-")
    return value or default


def _token(token_id: int) -> int:
    if not isinstance(token_id, int) or token_id < 0:
        raise ValueError(f"invalid token id {token_id!r}")
    return token_id


def _wallet(wallet: str) -> str:
    if not _WALLET.match(wallet):
        raise ValueError(f"invalid wallet address {wallet!r}")
    return wallet


def original_image_key(token_id: int, label: str, stamp: str, ext: str) -> str:
    t = _token(token_id)
    return f"images/originals/{t}/{t}_{slug(label)}_{stamp}.{ext}"


def thumbnail_key(token_id: int, size: str, ext: str) -> str:
    if size not in THUMBNAIL_SIZES:
        raise ValueError(f"unknown thumbnail size {size!r}")
    t = _token(token_id)
    return f"images/thumbnails/{t}/{t}_thumb_{size}.{ext}"


def processed_key(token_id: int, variant: str, stamp: str) -> str:
    if variant not in PROCESSED_VARIANTS:
        raise ValueError(f"unknown processed variant {variant!r}")
    t = _token(token_id)
    return f"images/processed/{t}/{t}_{variant}_{stamp}.jpg"


def highres_key(token_id: int, stamp: str) -> str:
    """A new high-resolution key: seed naming, with a random part in the purpose nobody can guess."""
    t = _token(token_id)
    return f"images/processed/{t}/{t}_highres-{secrets.token_hex(16)}_{stamp}.jpg"


def cache_key(token_id: int, name: str) -> str:
    t = _token(token_id)
    return f"images/processed/{t}/cache/{slug(name)}"


def document_key(token_id: int, category: str, label: str, stamp: str, ext: str) -> str:
    if category not in DOCUMENT_CATEGORIES:
        raise ValueError(f"unknown document category {category!r}")
    t = _token(token_id)
    return f"documents/{t}/{category}/{t}_{slug(label)}_{stamp}.{ext}"


def versioned_document_key(token_id: int, category: str, label: str, version: int, ext: str) -> str:
    """Seed 3.2.2's versioned form, `{tokenId}_{purpose}_v{version}.{ext}`, for a document that is
    replaced in place by later versions (nothing in the upload pipeline does that today: every upload
    gets its own timestamped key)."""
    if category not in DOCUMENT_CATEGORIES:
        raise ValueError(f"unknown document category {category!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"invalid version {version!r}")
    t = _token(token_id)
    return f"documents/{t}/{category}/{t}_{slug(label)}_v{version}.{ext}"


def model_key(token_id: int, label: str, stamp: str, ext: str, *, texture: bool = False) -> str:
    t = _token(token_id)
    folder = f"models/{t}/textures" if texture else f"models/{t}"
    return f"{folder}/{t}_{slug(label)}_{stamp}.{ext}"


def video_key(token_id: int, label: str, stamp: str, ext: str) -> str:
    t = _token(token_id)
    return f"videos/{t}/{t}_{slug(label)}_{stamp}.{ext}"


def avatar_key(wallet: str) -> str:
    """The served avatar: always a JPEG re-encoded by the avatar job, never the upload itself."""
    return f"user-uploads/{_wallet(wallet)}/profile/avatar.jpg"


def temp_key(wallet: str, token_id: int, purpose: str, stamp: str, ext: str) -> str:
    t = _token(token_id)
    return f"user-uploads/{_wallet(wallet)}/temp/{t}_{slug(purpose)}_{stamp}.{ext}"


def avatar_temp_key(wallet: str, stamp: str, ext: str) -> str:
    """Where an avatar upload is staged until the avatar job has checked and re-encoded it."""
    return f"user-uploads/{_wallet(wallet)}/temp/avatar_{stamp}.{ext}"


def temp_owner(key: str) -> str | None:
    """The wallet whose temp folder holds `key`, or None when it is not a temp key."""
    match = _TEMP_OWNER.match(key)
    return match.group(1) if match else None


def temp_token_id(key: str) -> int | None:
    """The token id a staged asset upload's key names, or None when it is not one."""
    match = _TEMP_TOKEN.match(key)
    return int(match.group(1)) if match else None


def is_avatar_temp_key(key: str) -> bool:
    return bool(_AVATAR_TEMP_KEY.match(key))


def final_key(
    purpose: str, token_id: int, label: str, stamp: str, content_type: str, category: str | None = None
) -> str:
    """Where an upload of this purpose lives once accepted."""
    ext = extension_for(content_type)
    if purpose == "image":
        return original_image_key(token_id, label, stamp, ext)
    if purpose == "document":
        return document_key(token_id, category or "certificates", label, stamp, ext)
    if purpose == "model":
        return model_key(token_id, label, stamp, ext, texture=content_type.startswith("image/"))
    if purpose == "video":
        return video_key(token_id, label, stamp, ext)
    raise ValueError(f"purpose {purpose!r} has no asset location")


def stamp_of(key: str) -> str:
    """The `{timestamp}` part of a key built here."""
    return key.rsplit("/", 1)[-1].rsplit(".", 1)[0].rsplit("_", 1)[-1]


def is_temp_key(key: str) -> bool:
    return bool(_TEMP_KEY.match(key))


def is_cache_key(key: str) -> bool:
    return bool(_CACHE_KEY.match(key))


def is_transient(exc: BaseException) -> bool:
    """Whether an S3 failure is worth retrying (throttling, 5xx, connection trouble)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return error.get("Code") in _TRANSIENT_CODES or status.startswith("5")
    return isinstance(exc, BotoCoreError | ConnectionError | TimeoutError)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_precondition_failed(exc: BaseException) -> bool:
    """Whether S3 refused a conditional call (If-Match) because the object has changed."""
    return isinstance(exc, ClientError) and _error_code(exc) in ("PreconditionFailed", "412")


# ---- bucket configuration ----------------------------------------------------------------------------


def lifecycle_rules(*, with_archive: bool = True) -> list[dict[str, Any]]:
    """Seed 3.2.4: temp uploads 24 h, processing cache 7 days, archive after 90 days."""
    rules: list[dict[str, Any]] = [
        {
            "ID": "temp-uploads-expire",
            "Status": "Enabled",
            "Filter": {"Tag": {"Key": LIFECYCLE_TAG, "Value": "temp"}},
            "Expiration": {"Days": TEMP_TTL.days or 1},
        },
        {
            "ID": "user-uploads-abort-multipart",
            "Status": "Enabled",
            "Filter": {"Prefix": "user-uploads/"},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        },
        {
            "ID": "processing-cache-expire",
            "Status": "Enabled",
            "Filter": {"Tag": {"Key": LIFECYCLE_TAG, "Value": "cache"}},
            "Expiration": {"Days": CACHE_TTL.days},
        },
    ]
    if with_archive:
        for rule_id, prefix, storage_class in (
            ("originals-archive", "images/originals/", "GLACIER_IR"),
            ("documents-archive", "documents/", "STANDARD_IA"),
            ("videos-archive", "videos/", "STANDARD_IA"),
        ):
            rules.append(
                {
                    "ID": rule_id,
                    "Status": "Enabled",
                    "Filter": {"Prefix": prefix},
                    "Transitions": [{"Days": ARCHIVE_AFTER_DAYS, "StorageClass": storage_class}],
                }
            )
    return rules


def public_read_policy(bucket: str) -> dict[str, Any]:
    """Anonymous GET on thumbnails, previews, watermarked previews and re-encoded avatars (seed 3.2.3)."""
    arn = f"arn:aws:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicRenditions",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": [
                    f"{arn}/images/thumbnails/*",
                    f"{arn}/images/processed/*_preview_*",
                    f"{arn}/images/processed/*_watermarked_*",
                    f"{arn}/user-uploads/*/profile/avatar.jpg",
                ],
            }
        ],
    }


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str | None
    last_modified: datetime
    metadata: dict[str, str]
    etag: str | None = None


class Storage:
    """The bucket and the S3 client bound to it."""

    def __init__(self, client, bucket: str, settings: Settings) -> None:
        self.client = client
        self.bucket = bucket
        self.settings = settings

    async def ensure_bucket(self) -> None:
        """Create the bucket if it is missing, then apply its lifecycle rules and public-read policy."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.settings.s3.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.s3.region}
            try:
                await self.client.create_bucket(**kwargs)
            except ClientError as create_exc:  # another process made it first
                if _error_code(create_exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        await self.apply_lifecycle()
        await self.apply_public_policy()

    async def apply_lifecycle(self) -> list[dict[str, Any]]:
        """Put the lifecycle rules; a store that refuses the archive transition gets the others."""
        for with_archive in (True, False):
            rules = lifecycle_rules(with_archive=with_archive)
            try:
                await self.client.put_bucket_lifecycle_configuration(
                    Bucket=self.bucket, LifecycleConfiguration={"Rules": rules}
                )
                return rules
            except ClientError as exc:
                log.warning("storage.lifecycle.refused", with_archive=with_archive, code=_error_code(exc))
        return []  # the sweeper job enforces the temp and cache rules anyway

    async def apply_public_policy(self) -> bool:
        """Allow anonymous reads of public renditions only; in production a refusal stops start-up.

        The policy replaces whatever the bucket held, so a broader grant left by an older setup goes.
        """
        if not self.settings.s3.public_policy:  # a CDN with its own origin access serves them
            log.info("storage.policy.skipped")
            return False
        try:
            await self.client.put_bucket_policy(
                Bucket=self.bucket, Policy=json.dumps(public_read_policy(self.bucket))
            )
            return True
        except ClientError as exc:  # e.g. S3 Block Public Access
            code = _error_code(exc)
            if self.settings.is_production:
                raise ConfigurationError(
                    f"the store refused the public-read bucket policy ({code}), so the bucket may grant "
                    "more or less than the public renditions: allow the policy, or set "
                    "S3_PUBLIC_POLICY=false and serve public media through S3_PUBLIC_BASE_URL"
                ) from exc
            log.warning("storage.policy.refused", code=code)
            return False

    async def ping(self) -> None:
        await self.client.head_bucket(Bucket=self.bucket)

    # ---- URLs ----------------------------------------------------------------------------------------

    def public_url(self, key: str) -> str:
        """URL of a publicly readable object: the CDN/public base when set, else the endpoint."""
        quoted = quote(key, safe="/")
        base = self.settings.s3.public_base_url
        if base:
            return f"{base.rstrip('/')}/{quoted}"
        endpoint = self.settings.s3.endpoint_url
        if endpoint:
            return f"{endpoint.rstrip('/')}/{self.bucket}/{quoted}"
        return f"https://{self.bucket}.s3.{self.settings.s3.region}.amazonaws.com/{quoted}"

    async def presigned_get(
        self, key: str, *, expires_in: int = PRESIGNED_GET_TTL_S, filename: str | None = None
    ) -> str:
        """A short-lived GET URL for a private object."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{slug(filename)}"'
        return await self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)

    async def presigned_post(
        self,
        key: str,
        *,
        content_type: str,
        max_bytes: int,
        expires_in: int = PRESIGNED_POST_TTL_S,
        lifecycle: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """A browser form upload to exactly `key`, of exactly `content_type`, of 1..max_bytes bytes."""
        fields: dict[str, str] = {"Content-Type": content_type}
        conditions: list[Any] = [
            {"bucket": self.bucket},
            ["eq", "$key", key],
            ["eq", "$Content-Type", content_type],
            ["content-length-range", 1, max_bytes],
        ]
        if lifecycle:
            tagging = _tagging_xml({LIFECYCLE_TAG: lifecycle})
            fields["tagging"] = tagging
            conditions.append(["eq", "$tagging", tagging])
        form = await self.client.generate_presigned_post(
            Bucket=self.bucket, Key=key, Fields=fields, Conditions=conditions, ExpiresIn=expires_in
        )
        expires_at = (now or utcnow()) + timedelta(seconds=expires_in)
        return {"url": form["url"], "fields": form["fields"], "key": key, "expiresAt": expires_at}

    # ---- objects -------------------------------------------------------------------------------------

    async def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str,
        *,
        cache_control: str | None = None,
        metadata: dict[str, str] | None = None,
        lifecycle: str | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": data,
            "ContentType": content_type,
        }
        if cache_control:
            kwargs["CacheControl"] = cache_control
        if metadata:
            kwargs["Metadata"] = metadata
        if lifecycle:
            kwargs["Tagging"] = f"{LIFECYCLE_TAG}={lifecycle}"
        await self.client.put_object(**kwargs)

    async def put_fileobj(self, key: str, fileobj, content_type: str) -> None:
        """Upload from a file object (a spooled upload), in parts when large."""
        await self.client.put_object(Bucket=self.bucket, Key=key, Body=fileobj, ContentType=content_type)

    async def head(self, key: str) -> StoredObject | None:
        """The object's size, type and age, or None when it does not exist."""
        try:
            response = await self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return StoredObject(
            key=key,
            size=int(response["ContentLength"]),
            content_type=response.get("ContentType"),
            last_modified=response["LastModified"],
            metadata=response.get("Metadata", {}),
            etag=response.get("ETag"),
        )

    async def read(self, key: str, *, first: int | None = None, if_match: str | None = None) -> bytes:
        """The object's bytes, or only its first `first` bytes (a ranged GET); `if_match` pins an ETag."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if first is not None:
            kwargs["Range"] = f"bytes=0-{max(first, 1) - 1}"
        if if_match:
            kwargs["IfMatch"] = if_match
        response = await self.client.get_object(**kwargs)
        async with response["Body"] as body:
            return await body.read()

    async def sha256(self, key: str, *, if_match: str | None = None) -> str:
        """The object's sha256, read in HASH_CHUNK_BYTES pieces so memory does not grow with its size."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if if_match:
            kwargs["IfMatch"] = if_match
        body = (await self.client.get_object(**kwargs))["Body"]
        digest = hashlib.sha256()
        async with body:  # closes the connection however the loop ends
            async for chunk in body.iter_chunks(HASH_CHUNK_BYTES):
                digest.update(chunk)
        return digest.hexdigest()

    async def copy(
        self,
        source: str,
        destination: str,
        *,
        content_type: str | None = None,
        if_match: str | None = None,
    ) -> None:
        """Server-side copy, of the source only while its ETag is `if_match` when given; objects over
        5 GB are outside every purpose's limit."""
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": destination,
            "CopySource": {"Bucket": self.bucket, "Key": source},
            # Drop the source's tags (the temp lifecycle tag must not follow the file).
            "TaggingDirective": "REPLACE",
            "Tagging": "",
        }
        if content_type:
            kwargs["ContentType"] = content_type
            kwargs["MetadataDirective"] = "REPLACE"
        if if_match:
            kwargs["CopySourceIfMatch"] = if_match
        await self.client.copy_object(**kwargs)

    async def delete(self, keys: Iterable[str]) -> int:
        """Delete objects (missing ones are fine); returns how many were asked for."""
        batch = [{"Key": key} for key in keys]
        for start in range(0, len(batch), 1000):
            chunk = batch[start : start + 1000]
            await self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
        return len(batch)

    async def list(self, prefix: str) -> AsyncIterator[StoredObject]:
        """Every object under a prefix."""
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield StoredObject(
                    key=item["Key"],
                    size=int(item["Size"]),
                    content_type=None,
                    last_modified=item["LastModified"],
                    metadata={},
                )

    # ---- multipart uploads (files over MULTIPART_THRESHOLD) -----------------------------------------

    async def create_multipart(self, key: str, *, content_type: str, lifecycle: str | None = None) -> str:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ContentType": content_type}
        if lifecycle:
            kwargs["Tagging"] = f"{LIFECYCLE_TAG}={lifecycle}"
        response = await self.client.create_multipart_upload(**kwargs)
        return response["UploadId"]

    async def presigned_part_urls(
        self, key: str, upload_id: str, part_count: int, *, expires_in: int = PRESIGNED_POST_TTL_S
    ) -> list[dict[str, Any]]:
        return [
            {
                "partNumber": number,
                "url": await self.client.generate_presigned_url(
                    "upload_part",
                    Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number},
                    ExpiresIn=expires_in,
                ),
            }
            for number in range(1, part_count + 1)
        ]

    async def uploaded_parts(self, key: str, upload_id: str) -> list[dict[str, Any]]:
        """The parts S3 has received for an upload: PartNumber, ETag, Size."""
        parts: list[dict[str, Any]] = []
        paginator = self.client.get_paginator("list_parts")
        async for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
            parts.extend(page.get("Parts", []))
        return parts

    async def complete_multipart(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        await self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]},
        )

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise


def _tagging_xml(tags: dict[str, str]) -> str:
    inner = "".join(f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in tags.items())
    return f"<Tagging><TagSet>{inner}</TagSet></Tagging>"


def s3_client_context(settings: Settings):
    """An async context manager yielding a configured aiobotocore S3 client."""
    session = aioboto3.Session()
    return session.client(
        "s3",
        endpoint_url=settings.s3.endpoint_url,
        region_name=settings.s3.region,
        aws_access_key_id=settings.s3.access_key_id or None,
        aws_secret_access_key=settings.s3.secret_access_key.get_secret_value() or None,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )
