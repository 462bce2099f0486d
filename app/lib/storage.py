"""S3 storage: one client per process, owned here with the bucket it works on."""

from __future__ import annotations

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError

from app.config import Settings


class Storage:
    """The bucket and the S3 client bound to it."""

    def __init__(self, client, bucket: str, settings: Settings) -> None:
        self.client = client
        self.bucket = bucket
        self.settings = settings

    async def ensure_bucket(self) -> None:
        """Create the bucket if it is missing."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            kwargs = {"Bucket": self.bucket}
            if self.settings.s3.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.s3.region}
            try:
                await self.client.create_bucket(**kwargs)
            except ClientError as create_exc:  # another process made it first
                if create_exc.response.get("Error", {}).get("Code") not in (
                    "BucketAlreadyOwnedByYou",
                    "BucketAlreadyExists",
                ):
                    raise

    async def ping(self) -> None:
        await self.client.head_bucket(Bucket=self.bucket)


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
