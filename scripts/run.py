"""`make run`: the API and the workers, plus an embedded stand-in for every service whose URL is unset."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from app.config import Settings
from app.lib.chain import without_url_secrets
from app.lib.embedded import ROOT, SERVICES_ENV, EmbeddedError, EmbeddedStack, find_anvil

# The embedded chain mines a block every 2 s, and a transaction is final 3 blocks deep: what a live
# chain does, in seconds, so mints and price pushes are seen confirmed while you watch.
DEV_BLOCK_TIME_S = 2
DEV_FINALITY_DEPTH = 3


def _start_services(settings: Settings, stack: EmbeddedStack) -> dict[str, str]:
    env: dict[str, str] = {}
    if not settings.mongodb.url:
        env["MONGODB_URL"] = stack.start_mongodb()
    if not settings.redis.url:
        env["REDIS_URL"] = stack.start_redis()
    if not settings.s3.endpoint_url:
        env["S3_ENDPOINT_URL"] = stack.start_s3()
    if not settings.chain.rpc_url:
        if find_anvil() is None:
            print(
                "chain: no node or anvil (install Node.js; make run then installs anvil): chain features off"
            )
        else:
            env["CHAIN_RPC_URL"] = stack.start_chain(settings.chain.chain_id, block_time=DEV_BLOCK_TIME_S)
            if settings.chain.finality_depth is None:  # anvil finalizes 64 blocks back: two minutes here
                env["CHAIN_FINALITY_DEPTH"] = str(DEV_FINALITY_DEPTH)
    return env


def _print_summary(settings: Settings, env: dict[str, str]) -> None:
    rows = [
        ("api", f"http://{settings.host}:{settings.port}  (docs: /schema, metrics: /metrics)"),
        ("mongodb", env.get("MONGODB_URL", settings.mongodb.url) or "-"),
        ("redis", env.get("REDIS_URL", settings.redis.url) or "-"),
        ("s3", env.get("S3_ENDPOINT_URL", settings.s3.endpoint_url) or "-"),
        ("chain", env.get("CHAIN_RPC_URL", settings.chain.rpc_url) or "off"),
        ("data", str(settings.data_dir.resolve())),
    ]
    print("DynamicVault is starting:")
    for name, where in rows:
        if where in env.values():
            print(f"  {name:<8} {where} (embedded)")
        else:  # a service of the user's: its URL may carry a key or a password
            print(f"  {name:<8} {without_url_secrets(where) if name != 'api' else where}")


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, cwd=ROOT, start_new_session=True)  # noqa: S603


def _stop(proc: subprocess.Popen, timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # its whole session: the workers' children too
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    settings = Settings()
    if settings.is_production:
        print(
            "make run is the development launcher; run the api and worker directly in production",
            file=sys.stderr,
        )
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    with EmbeddedStack(settings.data_dir) as stack:
        try:
            service_env = _start_services(settings, stack)
        except EmbeddedError as exc:
            print(f"could not start embedded services: {exc}", file=sys.stderr)
            return 1
        (settings.data_dir / SERVICES_ENV).write_text("".join(f"{k}={v}\n" for k, v in service_env.items()))
        _print_summary(settings, service_env)
        env = {**os.environ, **service_env}
        python = sys.executable
        if env.get("CHAIN_RPC_URL"):
            # The contracts, deployed on the first start and reused on the next ones.
            deployed = subprocess.run([python, "-m", "scripts.deploy"], env=env, cwd=ROOT, check=False)  # noqa: S603
            if deployed.returncode != 0:
                print("the contracts are not deployed: the chain features will not work", file=sys.stderr)
        children = {
            "api": _spawn(
                [
                    python,
                    "-m",
                    "uvicorn",
                    "app.main:create_app",
                    "--factory",
                    "--host",
                    settings.host,
                    "--port",
                    str(settings.port),
                    "--no-access-log",
                ],
                env,
            ),
            # The workers (main, images, webhooks) as children of one process that passes SIGTERM on.
            "worker": _spawn([python, "-m", "workers"], env),
        }
        exit_code = 0
        while not stopping:
            for name, proc in children.items():
                if proc.poll() is not None:
                    print(f"{name} exited with code {proc.returncode}; stopping", file=sys.stderr)
                    stopping, exit_code = True, 1
            time.sleep(0.2)
        print("stopping: api, workers, then services")
        _stop(children["api"], 15)
        _stop(children["worker"], settings.worker.job_completion_wait_s + 10)
    (settings.data_dir / SERVICES_ENV).unlink(missing_ok=True)
    print("stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
