"""`python -m workers [all|main|images|webhooks]`: the arq workers with the project's JSON logging.

`all` (the default) runs the main, image and webhook workers as child processes and passes SIGTERM and
SIGINT on to each; `main`, `images` or `webhooks` runs one of them, for deployments that scale them
apart.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time

from arq import run_worker

from app.lib.logging import configure_logging
from workers.settings import WORKERS, settings

POLL_S = 0.2


def run_all() -> int:
    """Every worker as a child; once one exits, stop the others, and fail if any failed."""
    children: list[subprocess.Popen] = []
    requested: list[int] = []  # the signal that asked us to stop, if one did

    def forward(signum: int, _frame: object) -> None:
        requested.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    children.extend(subprocess.Popen([sys.executable, "-m", "workers", name]) for name in WORKERS)  # noqa: S603
    while all(child.poll() is None for child in children):
        time.sleep(POLL_S)
    if requested:
        # A repeated signal can reach a worker after it has left arq's handlers behind, and end it.
        stopped_as_asked = {0, *(-signum for signum in requested)}
        codes = [child.wait() for child in children]
        return 0 if all(code in stopped_as_asked for code in codes) else 1
    first = next(child for child in children if child.poll() is not None)
    forward(signal.SIGTERM, None)  # a worker stopped on its own: stop the others, and fail
    for child in children:
        child.wait()
    return first.returncode if first.returncode > 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__.split("\n\n")[0])
    parser.add_argument("worker", nargs="?", default="all", choices=["all", *WORKERS])
    args = parser.parse_args(argv)
    if args.worker == "all":
        return run_all()
    configure_logging(settings.log_level, settings.log_json)
    run_worker(WORKERS[args.worker])
    return 0


if __name__ == "__main__":
    sys.exit(main())
