from app.lib.embedded import SERVICES_ENV, settings_with_running_services
from scripts.enqueue import enqueue

URL_NAMES = ("MONGODB_URL", "REDIS_URL", "S3_ENDPOINT_URL", "CHAIN_RPC_URL")


async def test_a_job_is_queued_once_by_name_on_the_running_platforms_redis(
    client, clients, services, tmp_path, monkeypatch
):
    for name in URL_NAMES:  # recorded as unset, so whatever is read below is undone after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    (tmp_path / SERVICES_ENV).write_text(
        f"MONGODB_URL={services['mongodb']}\nREDIS_URL={services['redis']}\n"
    )

    settings = settings_with_running_services()
    assert settings.redis.url == services["redis"]
    assert await enqueue(settings, "system.ping") == "queued"
    assert await enqueue(settings, "system.ping") != "queued"  # de-duplicated by its fixed job id
    assert await clients.redis.zcard("arq:queue") == 1
    assert await clients.redis.zscore("arq:queue", "manual:system.ping") is not None
