import asyncio
import pickle
import socket

from app.lib.errors import Unprocessable
from app.system import service
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


async def test_the_public_ping_result_names_no_worker_host_or_process(client, clients, settings):
    status_url = (await client.post("/api/system/worker-ping")).json()["statusUrl"]
    await drain_jobs(clients, settings)
    response = await client.get(status_url)
    assert set(response.json()["result"]) == {"pong", "at", "try"}
    assert socket.gethostname() not in response.text


async def test_a_failed_job_shows_an_error_code_not_the_exception_text(client, clients, settings):
    # A job whose exception text carries what no anonymous caller should read.
    await clients.redis.enqueue_job("system.ping", _job_id="leaky", dsn="mongodb://admin:hunter2@db")
    await clients.redis.enqueue_job("no.such.job", _job_id="unknown")
    await drain_jobs(clients, settings)
    for job_id in ("leaky", "unknown"):
        response = await client.get(f"/api/jobs/{job_id}")
        body = response.json()
        assert response.status_code == 200 and body["status"] == "complete", body
        assert body["success"] is False and body["error"] == "job_failed"
        assert set(body) == {"jobId", "status", "success", "error", "finishedAt"}
        for leak in ("dsn", "hunter2", "unexpected keyword", "not found", "no.such.job"):
            assert leak not in response.text


async def test_a_failed_job_keeps_the_code_of_a_domain_error(client):
    error = Unprocessable("the image at s3://private/key is not a JPEG", code="bad_image")
    assert service.job_error_code(pickle.loads(pickle.dumps(error))) == "bad_image"
    assert service.job_error_code(TimeoutError()) == "job_timeout"
    assert service.job_error_code(asyncio.CancelledError()) == "job_aborted"
    assert service.job_error_code(RuntimeError("code 'Drop Table'")) == "job_failed"
