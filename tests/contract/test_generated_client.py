"""The OpenAPI document alone builds a working client: openapi-python-client generates one from it, with
no warning, and its typed functions and models carry the main flows against the app (sign-in, asset
writes and lists, price history, uploads, market stats, errors). Every status a flow meets must be
documented: the generated client raises on any other, and parses an error body only when the document
describes it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from litestar import Litestar
from openapi_python_client.strings import PythonIdentifier

from tests import factories
from tests.conftest import drain_jobs
from tests.factories import T0
from tests.media import support

PACKAGE = "dynamicvault_client"
BASE_URL = "http://localhost:8000"


@dataclass
class Generated:
    """A client package generated from the app's document, and the document it came from."""

    package: ModuleType
    document: dict[str, Any] = field(repr=False)

    @property
    def models(self) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.models")

    def operation(self, method: str, path: str) -> ModuleType:
        """The generated module of `method path`, found as the generator names it: by its first tag and
        its operationId (so the test names routes, which are the contract, not generated module names)."""
        documented = self.document["paths"][path][method.lower()]
        assert documented.get("operationId"), f"{method} {path} has no operationId to name its function"
        tag = PythonIdentifier((documented.get("tags") or ["default"])[0], prefix="tag")
        name = PythonIdentifier(documented["operationId"], prefix="field_")
        return importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")


@pytest.fixture(scope="module")
def generated(app: Litestar, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    """Generate the client once for the module, failing on any warning the generator has about the
    document: a warning means an operation or a response it could not represent, missing from the client."""
    root = tmp_path_factory.mktemp("generated-client")
    document = app.openapi_schema.to_schema()
    (root / "openapi.json").write_text(json.dumps(document))
    (root / "config.json").write_text(json.dumps({"package_name_override": PACKAGE, "post_hooks": []}))
    generator = Path(sys.executable).parent / "openapi-python-client"
    run = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(root / "openapi.json"),
            "--config",
            str(root / "config.json"),
            "--output-path",
            str(root / PACKAGE),
            "--meta",
            "none",
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = f"{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, f"openapi-python-client refused the document:\n{output}"
    assert "warning" not in output.lower() and "error" not in output.lower(), output

    sys.path.insert(0, str(root))
    try:
        yield Generated(importlib.import_module(PACKAGE), document)
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


@dataclass
class Api:
    """Generated clients on the in-process app: anonymous, or carrying an access token."""

    generated: Generated
    app: Litestar

    def _httpx_args(self) -> dict[str, Any]:
        return {"transport": httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50000))}

    def anonymous(self) -> Any:
        return self.generated.package.Client(
            base_url=BASE_URL, httpx_args=self._httpx_args(), raise_on_unexpected_status=True
        )

    def signed_in(self, token: str) -> Any:
        # The token goes through the client's own headers: set_async_httpx_client would drop them.
        return self.generated.package.AuthenticatedClient(
            base_url=BASE_URL, token=token, httpx_args=self._httpx_args(), raise_on_unexpected_status=True
        )


@pytest.fixture
async def api(client: httpx.AsyncClient, app: Litestar, generated: Generated) -> Api:
    """The app started and wiped (the `client` fixture does both), reached through the generated client."""
    return Api(generated, app)


def parsed(response: Any, status: HTTPStatus) -> Any:
    """The typed body of a generated `Response`, once its status is the expected one."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response.parsed is not None, f"no documented body for {status}: {response.content[:500]!r}"
    return response.parsed


def argument(function: Callable[..., Any], parameter: str, value: Any) -> Any:
    """`value` as `function` takes its `parameter`: the member of the enum the document declares for it,
    if any (a client passes `Sort.CREATEDAT`, not the string), else `value` itself."""
    hint = typing.get_type_hints(function)[parameter]
    for declared in typing.get_args(hint) or (hint,):
        if isinstance(declared, type) and issubclass(declared, Enum):
            return declared(value)
    return value


def assert_error(response: Any, status: HTTPStatus, code: str) -> None:
    """The error body `{"error": {"code", "message", "details"}}` parsed into a generated model."""
    body = parsed(response, status)
    assert type(body).__module__.startswith(f"{PACKAGE}.models."), type(body)
    assert body.error.code == code
    assert isinstance(body.error.message, str) and body.error.message


async def test_a_wallet_signs_in_and_reads_who_it_is(api, generated, settings):
    models, account = generated.models, factories.new_account()
    async with api.anonymous() as anonymous:
        nonce = parsed(
            await generated.operation("GET", "/api/auth/nonce").asyncio_detailed(
                client=anonymous, wallet_address=account.address
            ),
            HTTPStatus.OK,
        )
        assert isinstance(nonce, models.NonceResponse)
        assert isinstance(nonce.expires_at, datetime)
        # The message is built from what the nonce answer says, as a wallet app would.
        text = factories.siwe_message(
            settings,
            account.address,
            nonce.nonce,
            domain=nonce.domain,
            uri=nonce.uri,
            chain_id=nonce.chain_id,
        )
        signed = models.SignInRequest(
            wallet_address=account.address, signature=factories.sign(account, text), message=text
        )
        tokens = parsed(
            await generated.operation("POST", "/api/auth/verify").asyncio_detailed(
                client=anonymous, body=signed
            ),
            HTTPStatus.OK,
        )
        assert isinstance(tokens, models.TokenResponse)
        assert isinstance(tokens.user, models.UserOut) and tokens.user.wallet_address == account.address
        assert tokens.access_token and tokens.expires_in > 0

        # The refresh cookie the answer set stays in the client and buys a new access token.
        refreshed = parsed(
            await generated.operation("POST", "/api/auth/refresh").asyncio_detailed(client=anonymous),
            HTTPStatus.OK,
        )
        assert isinstance(refreshed, models.RefreshResponse) and refreshed.access_token

    async with api.signed_in(refreshed.access_token) as signed_in:
        me = parsed(
            await generated.operation("GET", "/api/auth/me").asyncio_detailed(client=signed_in), HTTPStatus.OK
        )
    assert isinstance(me, models.PrincipalOut)
    assert me.wallet_address == account.address and "user" in me.roles


async def test_an_admin_creates_an_asset_and_reads_it_back(api, generated, settings):
    models = generated.models
    admin = await factories.login(settings, roles=("user", "admin"))
    body = models.AssetCreate(
        token_id=42,
        contract_address=factories.CONTRACT,
        name="Harbour at Dawn",
        asset_type=models.AssetCreateAssetType("Art"),  # the document's enum
        description="Oil on canvas.",
        owner=factories.ALICE,
    )
    async with api.signed_in(admin.access_token) as http:
        created = parsed(
            await generated.operation("POST", "/api/assets").asyncio_detailed(client=http, body=body),
            HTTPStatus.CREATED,
        )
    assert isinstance(created, models.AssetDetail)
    assert (created.token_id, created.name, created.asset_type) == (42, "Harbour at Dawn", "Art")

    async with api.anonymous() as anonymous:
        read = parsed(
            await generated.operation("GET", "/api/assets/{tokenId}").asyncio_detailed(42, client=anonymous),
            HTTPStatus.OK,
        )
    assert isinstance(read, models.AssetDetail)
    assert read.token_id == 42 and read.description == "Oil on canvas."
    assert isinstance(read.current_price, models.Price)


async def test_the_asset_list_is_walked_to_its_end_by_cursor(api, generated):
    models = generated.models
    for token_id in range(1, 12):
        await factories.asset(token_id, price=f"{token_id}.5")
    list_assets = generated.operation("GET", "/api/assets")

    by_creation = argument(list_assets.asyncio_detailed, "sort", "createdAt")

    seen: list[int] = []
    after: dict[str, str] = {}
    pages = 0
    async with api.anonymous() as anonymous:
        while True:
            page = parsed(
                await list_assets.asyncio_detailed(client=anonymous, limit=4, sort=by_creation, **after),
                HTTPStatus.OK,
            )
            assert isinstance(page, models.AssetPage)
            assert all(isinstance(item, models.AssetListItem) for item in page.items)
            assert len(page.items) <= 4
            seen += [item.token_id for item in page.items]
            pages += 1
            if page.next_cursor is None:
                break
            assert isinstance(page.next_cursor, str)
            after = {"cursor": page.next_cursor}
    assert pages == 3
    assert len(seen) == len(set(seen)) == 11
    assert seen == list(range(1, 12))


async def test_price_history_reads_as_typed_points_and_buckets(api, generated):
    models = generated.models
    await factories.asset(7)
    for hour, price in enumerate(["1.00", "1.25", "0.75"]):
        await factories.price_point(7, T0 + timedelta(hours=hour), price)
    await factories.price_point(7, T0 + timedelta(hours=1, minutes=30), "3", source="sale", confidence=None)
    history = generated.operation("GET", "/api/assets/{tokenId}/price-history")

    async with api.anonymous() as anonymous:
        raw = parsed(await history.asyncio_detailed(7, client=anonymous), HTTPStatus.OK)
        assert isinstance(raw, models.PriceHistoryPage)
        assert raw.token_id == 7 and raw.interval == "raw" and raw.next_cursor is None
        assert all(isinstance(point, models.PricePoint) for point in raw.points)
        assert [point.price for point in raw.points] == [1.0, 1.25, 3.0, 0.75]
        assert raw.points[0].price_wei == "1000000000000000000"
        assert raw.points[0].timestamp == T0 and raw.points[0].confidence_score == 80.0
        assert [point.source for point in raw.points] == ["ai-oracle", "ai-oracle", "sale", "ai-oracle"]

        daily = parsed(
            await history.asyncio_detailed(
                7,
                client=anonymous,
                interval=argument(history.asyncio_detailed, "interval", "1d"),
                from_=T0,
                to=T0 + timedelta(days=1),
            ),
            HTTPStatus.OK,
        )
    assert isinstance(daily, models.PriceHistoryPage)
    (day,) = daily.buckets
    assert isinstance(day, models.PriceBucket) and day.bucket == T0
    assert (day.open_, day.high, day.low, day.close, day.count) == (1.0, 3.0, 0.75, 0.75, 4)


async def test_an_upload_is_presigned_posted_to_s3_and_processed(api, generated, clients, settings):
    models = generated.models
    owner = await factories.owner_with_asset(settings, 7)
    photo = support.photo()
    request = models.UploadRequest.from_dict(
        {
            "purpose": "image",
            "tokenId": 7,
            "fileName": "primary.jpg",
            "contentType": "image/jpeg",
            "contentLength": len(photo),
        }
    )
    async with api.signed_in(owner.access_token) as http:
        form = parsed(
            await generated.operation("POST", "/api/storage/presigned-url").asyncio_detailed(
                client=http, body=request
            ),
            HTTPStatus.CREATED,
        )
        assert isinstance(form, models.PresignedPost)
        assert isinstance(form.expires_at, datetime)
        assert form.key.startswith(f"user-uploads/{owner.wallet}/temp/7_image_")
        fields = form.fields.to_dict()
        assert fields["key"] == form.key

        # The file goes to S3 itself, as a browser posts it: that is no API call.
        uploaded = await support.post_form({"url": form.url, "fields": fields}, photo, "primary.jpg")
        assert uploaded.status_code in (200, 201, 204), uploaded.text

        job = parsed(
            await generated.operation("POST", "/api/assets/{tokenId}/process-media").asyncio_detailed(
                7, client=http
            ),
            HTTPStatus.ACCEPTED,
        )
        assert isinstance(job, models.ProcessingJob)
        assert job.pending == 1 and job.status_url == f"/api/jobs/{job.job_id}"

        await drain_jobs(clients, settings)
        state = parsed(
            await generated.operation("GET", "/api/jobs/{jobId}").asyncio_detailed(job.job_id, client=http),
            HTTPStatus.OK,
        )
        assert isinstance(state, models.JobStateOut)
        assert state.status == "complete" and state.success is True

        asset = parsed(
            await generated.operation("GET", "/api/assets/{tokenId}").asyncio_detailed(7, client=http),
            HTTPStatus.OK,
        )
    assert isinstance(asset.media, models.MediaView)
    assert asset.media.thumbnail_url


async def test_market_stats_read_as_a_named_model(api, generated):
    models = generated.models
    await factories.asset(1, factories.ALICE, price="1", listed_at="2")
    await factories.asset(2, factories.BOB, price="3")
    await factories.asset(3, factories.BOB, asset_type="Real Estate", price="10")

    async with api.anonymous() as anonymous:
        stats = parsed(
            await generated.operation("GET", "/api/market/stats").asyncio_detailed(client=anonymous),
            HTTPStatus.OK,
        )
    assert isinstance(stats, models.MarketStats)
    assert isinstance(stats.generated_at, datetime)
    assert (stats.total_assets, stats.listed_count, stats.unique_owners) == (3, 1, 2)
    assert stats.assets_by_type.to_dict() == {"Art": 2, "Real Estate": 1}
    assert all(isinstance(prices, models.TypePrices) for prices in stats.price_by_type)
    assert isinstance(stats.volume, models.VolumeWindows)


async def test_error_answers_parse_into_the_error_model_with_their_code(api, generated, settings):
    user = await factories.login(settings)
    async with api.anonymous() as anonymous:
        missing = await generated.operation("GET", "/api/assets/{tokenId}").asyncio_detailed(
            999, client=anonymous
        )
        assert_error(missing, HTTPStatus.NOT_FOUND, "asset_not_found")

        unauthenticated = await generated.operation("GET", "/api/auth/me").asyncio_detailed(client=anonymous)
        assert_error(unauthenticated, HTTPStatus.UNAUTHORIZED, "authentication_required")

        too_many = await generated.operation("GET", "/api/assets").asyncio_detailed(
            client=anonymous, limit=1000
        )
        assert_error(too_many, HTTPStatus.BAD_REQUEST, "invalid_limit")

    async with api.signed_in(user.access_token) as http:
        not_admin = await generated.operation("POST", "/api/assets").asyncio_detailed(
            client=http,
            body=generated.models.AssetCreate(
                token_id=5,
                contract_address=factories.CONTRACT,
                name="Nope",
                asset_type=generated.models.AssetCreateAssetType("Art"),
            ),
        )
    assert_error(not_admin, HTTPStatus.FORBIDDEN, "insufficient_permission")
