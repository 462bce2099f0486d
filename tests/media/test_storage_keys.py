"""Key building (seed 3.2.2) and the bucket's public-read policy as the store holds it (seed 3.2.3)."""

from __future__ import annotations

import fnmatch
import json

import pytest

from app.lib import storage as keys

WALLET = "0x" + "Ab" * 20
STAMP = "20250102T030405000006Z"


def test_versioned_document_keys_follow_the_seed_naming():
    assert (
        keys.versioned_document_key(42, "metadata", "Token Metadata", 3, "json")
        == "documents/42/metadata/42_token-metadata_v3.json"
    )
    assert (
        keys.versioned_document_key(42, "certificates", "authenticity", 1, "pdf")
        == "documents/42/certificates/42_authenticity_v1.pdf"
    )
    for bad in (
        lambda: keys.versioned_document_key(42, "images", "x", 1, "pdf"),
        lambda: keys.versioned_document_key(42, "legal", "x", 0, "pdf"),
        lambda: keys.versioned_document_key(42, "legal", "x", True, "pdf"),
        lambda: keys.versioned_document_key(-1, "legal", "x", 1, "pdf"),
    ):
        with pytest.raises(ValueError):
            bad()


def test_document_keys_follow_the_seed_naming():
    assert (
        keys.document_key(7, "legal", "provenance_1", STAMP, "pdf")
        == f"documents/7/legal/7_provenance-1_{STAMP}.pdf"
    )
    assert keys.stamp_of(keys.document_key(7, "certificates", "appraisal", STAMP, "pdf")) == STAMP


def _public(policy: dict, bucket: str, key: str) -> bool:
    """Whether the policy lets anyone GET `key` (S3 ARN wildcards: `*` spans '/' too)."""
    arn = f"arn:aws:s3:::{bucket}/{key}"
    allowed = denied = False
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"]
        resources = resources if isinstance(resources, list) else [resources]
        if statement.get("Principal") not in ("*", {"AWS": "*"}) or not {"s3:GetObject", "s3:*"} & set(
            actions
        ):
            continue
        if any(fnmatch.fnmatchcase(arn, pattern) for pattern in resources):
            if statement["Effect"] == "Allow":
                allowed = True
            else:
                denied = True
    return allowed and not denied


async def test_bucket_policy_in_the_store_makes_only_renditions_and_avatars_public(client, clients):
    stored = await clients.storage.client.get_bucket_policy(Bucket=clients.storage.bucket)
    policy = json.loads(stored["Policy"])
    bucket = clients.storage.bucket
    public = {
        "thumbnail": keys.thumbnail_key(7, "md", "webp"),
        "preview": keys.processed_key(7, "preview", STAMP),
        "watermarked": keys.processed_key(7, "watermarked", STAMP),
        "avatar": keys.avatar_key(WALLET),
    }
    private = {
        "original": keys.original_image_key(7, "front_preview_watermarked", STAMP, "jpg"),
        "highres": keys.processed_key(7, "highres", STAMP),
        "certificate": keys.document_key(7, "certificates", "authenticity", STAMP, "pdf"),
        "legal": keys.document_key(7, "legal", "preview", STAMP, "pdf"),
        "metadata": keys.versioned_document_key(7, "metadata", "watermarked", 2, "json"),
        "cache": keys.cache_key(7, "7_preview_x"),
        "model": keys.model_key(7, "preview", STAMP, "glb"),
        "video": keys.video_key(7, "preview", STAMP, "mp4"),
        "temp": keys.temp_key(WALLET, 7, "image", STAMP, "jpg"),
        "avatar upload": keys.avatar_temp_key(WALLET, STAMP, "jpg"),
    }
    for name, key in public.items():
        assert _public(policy, bucket, key), (name, key)
    for name, key in private.items():
        assert not _public(policy, bucket, key), (name, key)
    # Nothing beyond reads, and nothing outside those four kinds of object.
    for statement in policy["Statement"]:
        assert statement["Action"] in ("s3:GetObject", ["s3:GetObject"])
    assert policy == keys.public_read_policy(bucket)
