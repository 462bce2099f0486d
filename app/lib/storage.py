"""S3 storage: one client per process and the bucket it works on (keys: app/lib/bucket.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aioboto3
import structlog
from botocore.config import Config
from botocore.exceptions import ClientError

from app.config import ConfigurationError, Settings
from app.lib.bucket import (
    HASH_CHUNK_BYTES,
    LIFECYCLE_TAG,
    PRESIGNED_GET_TTL_S,
    PRESIGNED_POST_TTL_S,
    error_code,
    lifecycle_rules,
    public_read_policy,
    slug,
)
from app.lib.timeutil import utcnow

log = structlog.get_logger(__name__)


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
            if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.settings.s3.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.s3.region}
            try:
                await self.client.create_bucket(**kwargs)
            except ClientError as create_exc:  # another process made it first
                if error_code(create_exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
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
                log.warning("storage.lifecycle.refused", with_archive=with_archive, code=error_code(exc))
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
            code = error_code(exc)
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

    async def upload_file(self, path: Path, key: str, content_type: str, *, part_size: int) -> int:
        """Upload a file from disk, in parts of `part_size` (>= 5 MiB) when larger, one part in memory at
        a time; an upload that fails is aborted. Returns the bytes sent."""
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size <= part_size:
                data = await asyncio.to_thread(file.read)
                await self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
                return size
            upload_id = await self.create_multipart(key, content_type=content_type)
            try:
                parts = []
                while data := await asyncio.to_thread(file.read, part_size):
                    number = len(parts) + 1
                    response = await self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                    )
                    parts.append({"PartNumber": number, "ETag": response["ETag"]})
                await self.complete_multipart(key, upload_id, parts)
            except BaseException:
                await self.abort_multipart(key, upload_id)
                raise
        return size

    async def download_file(self, key: str, path: Path) -> str:
        """Write the object to `path`, HASH_CHUNK_BYTES at a time; returns the sha256 of what was written."""
        body = (await self.client.get_object(Bucket=self.bucket, Key=key))["Body"]
        digest = hashlib.sha256()
        with path.open("wb") as file:
            async with body:
                async for chunk in body.iter_chunks(HASH_CHUNK_BYTES):
                    digest.update(chunk)
                    await asyncio.to_thread(file.write, chunk)
        return digest.hexdigest()

    async def head(self, key: str) -> StoredObject | None:
        """The object's size, type and age, or None when it does not exist."""
        try:
            response = await self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
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

    async def multipart_uploads(self, prefix: str) -> AsyncIterator[tuple[str, str, datetime]]:
        """Every multipart upload under a prefix not yet completed or aborted: (key, upload id, initiated)."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                yield upload["Key"], upload["UploadId"], upload["Initiated"]

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if error_code(exc) != "NoSuchUpload":
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
