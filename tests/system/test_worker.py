from tests.conftest import drain_jobs


async def test_a_job_goes_from_api_to_queue_to_worker_and_back(client, clients, settings):
    queued = await client.post("/api/system/worker-ping")
    assert queued.status_code == 202
    status_url = queued.json()["statusUrl"]

    pending = await client.get(status_url)
    assert pending.json()["status"] == "queued"

    worker = await drain_jobs(clients, settings)
    assert worker.jobs_complete == 1

    done = (await client.get(status_url)).json()
    assert done["status"] == "complete"
    assert done["success"] is True
    assert done["result"]["pong"] is True


async def test_repeated_pings_in_one_window_queue_one_job(client, clients, settings):
    ids = {(await client.post("/api/system/worker-ping")).json()["jobId"] for _ in range(5)}
    assert len(ids) == 1
    assert await clients.redis.zcard("arq:queue") == 1


async def test_unknown_job_is_404(client):
    response = await client.get("/api/jobs/no-such-job")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"
