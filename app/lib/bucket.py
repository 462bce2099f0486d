"""The bucket's layout: every object key the platform uses, the lifecycle rules and the public-read policy.

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
    archive/auditLogs/{YYYY}/{MM}/{DD}/{firstId}-{lastId}.jsonl.gz   audit entries past their retention
    backups/{timestamp}/{collection}.bson.gz, backups/{timestamp}/manifest.json   private (app/system/backups)

A rendition carries the timestamp of the original it was made from, so processing the same original
again writes the same keys. A high-resolution key also carries 128 random bits, so it cannot be derived
from the public preview key beside it (the processing job reuses the key it recorded the first time).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

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
AUDIT_ARCHIVE_PREFIX = "archive/auditLogs/"
LIFECYCLE_TAG = "dv-lifecycle"  # object tag the temp and cache lifecycle rules filter on
BACKUPS_PREFIX = "backups/"
BACKUP_PART_SIZE = 8 * 1024 * 1024  # backups upload in parts this size: little memory, up to 80 GB a file

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
AVATAR_TEMP_KEY_PATTERN = r"^user-uploads/0x[0-9a-fA-F]{40}/temp/avatar_\d{8}T\d{12}Z\.(?:jpg|png|webp)$"
_AVATAR_TEMP_KEY = re.compile(AVATAR_TEMP_KEY_PATTERN)
_CACHE_KEY = re.compile(r"^images/processed/\d+/cache/")
_OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
_STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
_BACKUP_NAME = re.compile(r"^\d{8}T\d{12}Z$")  # a timestamp_token()
_BACKUP_KEY = re.compile(r"^backups/(\d{8}T\d{12}Z)/")
_TRANSIENT_CODES = frozenset(
    {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
)


# ---- keys ------------------------------------------------------------------------------------------


def extension_for(content_type: str) -> str:
    """File extension for an allowed content type."""
    return _EXTENSIONS[content_type]


def timestamp_token(at: datetime) -> str:
    """The `{timestamp}` of a file name: UTC, compact, to the microsecond so names do not collide."""
    return at.strftime(_STAMP_FORMAT)


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


def audit_archive_key(day: date, first_id: str, last_id: str, count: int) -> str:
    """One batch of a day's archived audit entries, named by its first and last entry ids (ObjectIds) and
    how many it holds: the same batch archived again has the same name, and a batch with a gap between
    the same ends (two runs overlapping) has another, so it never overwrites the fuller one."""
    for entry_id in (first_id, last_id):
        if not _OBJECT_ID.match(entry_id):
            raise ValueError(f"invalid audit entry id {entry_id!r}")
    return f"{AUDIT_ARCHIVE_PREFIX}{day:%Y/%m/%d}/{first_id}-{last_id}-{count}.jsonl.gz"


def oracle_model_key(version: str) -> str:
    """A trained oracle model's artifact (admin-only; the model's record holds its sha256)."""
    return f"oracle-models/{slug(version, 'model')}.pkl.gz"


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


def is_backup_name(name: str) -> bool:
    """Whether `name` is a backup's name: the timestamp_token() of when it started."""
    return bool(_BACKUP_NAME.match(name))


def backup_key(name: str, file: str) -> str:
    """A file of the backup `name` (an archive, or its manifest)."""
    if not is_backup_name(name):
        raise ValueError(f"invalid backup name {name!r}")
    if not file or "/" in file:
        raise ValueError(f"invalid backup file {file!r}")
    return f"{BACKUPS_PREFIX}{name}/{file}"


def backup_name_of(key: str) -> str | None:
    """The backup a key belongs to, or None when it is no backup's."""
    match = _BACKUP_KEY.match(key)
    return match.group(1) if match else None


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


def stamped_at(key: str) -> datetime | None:
    """When a key built here was made (its `{timestamp}`), or None when it carries none."""
    try:
        return datetime.strptime(stamp_of(key), _STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


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


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_precondition_failed(exc: BaseException) -> bool:
    """Whether S3 refused a conditional call (If-Match) because the object has changed."""
    return isinstance(exc, ClientError) and error_code(exc) in ("PreconditionFailed", "412")


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
        {  # parts a crashed backup left (one that fails aborts its own upload)
            "ID": "backups-abort-multipart",
            "Status": "Enabled",
            "Filter": {"Prefix": BACKUPS_PREFIX},
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
