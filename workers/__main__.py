"""`python -m workers`: run the arq worker with the project's JSON logging."""

from arq import run_worker

from app.lib.logging import configure_logging
from workers.settings import WorkerSettings, settings


def main() -> None:
    configure_logging(settings.log_level, settings.log_json)
    run_worker(WorkerSettings)


if __name__ == "__main__":
    main()
