"""Key building (seed 3.2.2) and the bucket's public-read policy as the store holds it (seed 3.2.3)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError

from app.assets.documents import Asset
from app.config import ConfigurationError
from app.lib import bucket as keys
from app.lib import clients as clients_module
from app.media import jobs, service
from tests import factories
from tests.conftest import drain_jobs
from tests.media import support

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
        "highres": keys.highres_key(7, STAMP),
        "highres, as named before it had a random part": f"images/processed/7/7_highres_{STAMP}.jpg",
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


def _private_and_public_keys() -> tuple[dict[str, str], dict[str, str]]:
    public = {
        "thumbnail": keys.thumbnail_key(7, "md", "webp"),
        "preview": keys.processed_key(7, "preview", STAMP),
        "watermarked": keys.processed_key(7, "watermarked", STAMP),
    }
    private = {
        "highres": keys.highres_key(7, STAMP),
        "highres, as named before it had a random part": f"images/processed/7/7_highres_{STAMP}.jpg",
        "original": keys.original_image_key(7, "primary", STAMP, "jpg"),
        "cache": keys.cache_key(7, "scratch"),
        "document": keys.document_key(7, "certificates", "authenticity", STAMP, "pdf"),
        "temp": keys.temp_key(WALLET, 7, "image", STAMP, "jpg"),
    }
    return public, private


def _compose_grants(bucket: str) -> dict:
    """Every anonymous grant docker-compose.yml's MinIO set-up makes, as one bucket policy."""
    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    setup = compose["services"]["minio-setup"]
    script = " ".join(setup["command"])
    statements = []
    # `mc anonymous set download|upload|public ALIAS/BUCKET[/PREFIX]` opens everything under the prefix.
    for target in re.findall(r"mc anonymous set (?:download|upload|public) (\S+)", script):
        prefix = target.split("/", 2)[2] if target.count("/") >= 2 else ""
        resource = f"arn:aws:s3:::{bucket}/{prefix.strip('/') + '/' if prefix else ''}*"
        statements.append({"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": resource})
    for policy_file, target in re.findall(r"mc anonymous set-json (\S+) (\S+)", script):
        assert target == f"local/{bucket}", target
        assert f'"$${{PUBLIC_READ_POLICY}}" > {policy_file}' in script
        statements.extend(json.loads(setup["environment"]["PUBLIC_READ_POLICY"])["Statement"])
    return {"Version": "2012-10-17", "Statement": statements}


def test_docker_compose_makes_only_public_renditions_anonymous():
    bucket = "dynamicvault-assets"
    policy = _compose_grants(bucket)
    public, private = _private_and_public_keys()
    public["avatar"] = keys.avatar_key(WALLET)
    for name, key in private.items():
        assert not _public(policy, bucket, key), (name, key)
    for name, key in public.items():
        assert _public(policy, bucket, key), (name, key)
    assert policy == keys.public_read_policy(bucket)  # the same policy the api puts at start-up


async def test_high_resolution_keys_cannot_be_derived_from_the_public_preview_key(client, clients, settings):
    owner = await factories.owner_with_asset(settings, 7)
    await factories.asset(8, owner.wallet)
    for token_id in (7, 8):
        response = await client.post(
            f"/api/assets/{token_id}/images",
            files=[("files", ("primary.jpg", support.photo((320, 240)), "image/jpeg"))],
            headers=owner.headers,
        )
        assert response.status_code == 201, response.text
    await drain_jobs(clients, settings)

    secrets = []
    for token_id in (7, 8):
        detail = await client.get(f"/api/assets/{token_id}")
        assert detail.status_code == 200, detail.text
        (image,) = detail.json()["media"]["images"]
        preview = image["previewUrl"].split(f"/{clients.storage.bucket}/", 1)[1]
        # What an anonymous reader would try: the preview key with the variant swapped.
        for guess in (preview.replace("_preview_", "_highres_"), preview.replace("preview", "highres")):
            assert await clients.storage.head(guess) is None, guess
        asset = await Asset.find_one(Asset.tokenId == token_id)
        (highres,) = [f for f in asset.media.files if f.kind == "highres"]
        match = re.fullmatch(
            rf"images/processed/{token_id}/{token_id}_highres-([0-9a-f]{{32}})_(\w+)\.jpg", highres.key
        )
        assert match, highres.key
        assert match.group(2) == keys.stamp_of(preview)  # seed naming: the original's timestamp last
        assert match.group(1) not in preview
        assert await clients.storage.head(highres.key) is not None
        secrets.append(match.group(1))
    assert secrets[0] != secrets[1]


async def _processed_primary(client, clients, settings) -> str:
    """Asset 7 with one processed image; the public preview key an anonymous reader sees."""
    owner = await factories.owner_with_asset(settings, 7)
    response = await client.post(
        "/api/assets/7/images",
        files=[("files", ("primary.jpg", support.photo((320, 240)), "image/jpeg"))],
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    await drain_jobs(clients, settings)
    (image,) = (await client.get("/api/assets/7")).json()["media"]["images"]
    return image["previewUrl"].split(f"/{clients.storage.bucket}/", 1)[1]


async def _highres_records():
    asset = await Asset.find_one(Asset.tokenId == 7)
    return [f for f in asset.media.files if f.kind == "highres"]


async def _make_highres_guessable(clients, preview: str) -> str:
    """Move asset 7's high-resolution rendition to the key it had before keys were random."""
    (highres,) = await _highres_records()
    legacy = preview.replace("_preview_", "_highres_")
    await clients.storage.copy(highres.key, legacy)
    await clients.storage.delete([highres.key])
    await Asset.get_pymongo_collection().update_one(
        {"tokenId": 7},
        {"$set": {"media.files.$[f].key": legacy}},
        array_filters=[{"f.key": highres.key}],
    )
    assert await clients.storage.head(legacy) is not None  # what an anonymous reader could fetch
    return legacy


async def _assert_highres_moved_to_a_random_key(clients, legacy: str, sha256: str) -> None:
    (highres,) = await _highres_records()
    assert re.fullmatch(r"images/processed/7/7_highres-[0-9a-f]{32}_\w+\.jpg", highres.key), highres.key
    assert await clients.storage.head(legacy) is None
    assert highres.sha256 == sha256
    assert hashlib.sha256(await clients.storage.read(highres.key)).hexdigest() == sha256


async def test_processing_again_moves_a_guessable_high_resolution_key_to_a_random_one(
    client, clients, settings
):
    preview = await _processed_primary(client, clients, settings)
    (before,) = await _highres_records()
    legacy = await _make_highres_guessable(clients, preview)
    login = await factories.login(settings, roles=("admin",))
    queued = await client.post("/api/assets/7/process-media", headers=login.headers)
    assert queued.status_code == 202, queued.text
    assert (await drain_jobs(clients, settings)).jobs_failed == 0
    await _assert_highres_moved_to_a_random_key(clients, legacy, before.sha256)


async def test_rendering_over_a_guessable_recorded_key_writes_a_random_one(client, clients, settings):
    preview = await _processed_primary(client, clients, settings)
    legacy = await _make_highres_guessable(clients, preview)
    asset = await Asset.find_one(Asset.tokenId == 7)
    (original,) = [f for f in asset.media.files if f.kind == "image"]
    assert await service.render_image(clients.storage, 7, original, primary=True) == "processed"
    (highres,) = await _highres_records()
    await _assert_highres_moved_to_a_random_key(clients, legacy, highres.sha256)


async def test_the_sweep_moves_guessable_high_resolution_keys_of_assets_nobody_reprocesses(
    client, clients, settings
):
    preview = await _processed_primary(client, clients, settings)
    (before,) = await _highres_records()
    legacy = await _make_highres_guessable(clients, preview)
    assert await service.tokens_with_guessable_highres() == [7]
    await jobs.sweep({"clients": clients, "settings": settings})
    assert (await drain_jobs(clients, settings)).jobs_failed == 0
    await _assert_highres_moved_to_a_random_key(clients, legacy, before.sha256)
    assert await service.tokens_with_guessable_highres() == []


class _PolicyRefusingClient:
    """A real S3 client whose store refuses bucket policies, as one under Block Public Access does."""

    def __init__(self, client) -> None:
        self._client = client
        self.policy_puts = 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    async def put_bucket_policy(self, **kwargs):
        self.policy_puts += 1
        error = {"Error": {"Code": "AccessDenied", "Message": "public policies are blocked"}}
        raise ClientError(error, "PutBucketPolicy")


def _start_up_with_refusing_store(monkeypatch, settings, app_env: str, **s3):
    real = clients_module.s3_client_context
    refusing = {}

    class _Context:
        def __init__(self, ctx) -> None:
            self._ctx = ctx

        async def __aenter__(self):
            refusing["client"] = _PolicyRefusingClient(await self._ctx.__aenter__())
            return refusing["client"]

        async def __aexit__(self, *exc):
            return await self._ctx.__aexit__(*exc)

    monkeypatch.setattr(clients_module, "s3_client_context", lambda s: _Context(real(s)))
    changed = settings.model_copy(
        update={"app_env": app_env, "s3": settings.s3.model_copy(update={"bucket": "dv-policy-test", **s3})}
    )
    return clients_module.open_clients(changed), refusing


async def test_production_start_up_refuses_a_store_that_refuses_the_bucket_policy(
    client, settings, monkeypatch
):
    opening, _ = _start_up_with_refusing_store(monkeypatch, settings, "production")
    with pytest.raises(ConfigurationError, match="S3_PUBLIC_POLICY"):
        async with opening:
            pass


async def test_development_start_up_only_warns_when_the_bucket_policy_is_refused(
    client, settings, monkeypatch
):
    opening, refusing = _start_up_with_refusing_store(monkeypatch, settings, "development")
    async with opening as started:
        assert started.storage.bucket == "dv-policy-test"
    assert refusing["client"].policy_puts == 1


async def test_production_behind_a_cdn_can_leave_the_bucket_without_a_policy(client, settings, monkeypatch):
    opening, refusing = _start_up_with_refusing_store(
        monkeypatch, settings, "production", public_policy=False, public_base_url="https://cdn.example"
    )
    async with opening:
        pass
    assert refusing["client"].policy_puts == 0
    bare = settings.model_copy(update={"s3": settings.s3.model_copy(update={"public_policy": False})})
    assert any("S3_PUBLIC_POLICY" in problem for problem in bare.production_problems())
