"""A worker process driving the outbox on the session's services: `python -m tests.chain.outbox_process
PASSES [KILL_AT]`. With KILL_AT it kills itself with SIGKILL at that step of a transaction, as the kernel
or an operator would: no `finally`, no `except`, nothing written after it.

KILL_AT: `signed` (stored signed, before it is sent), `sent` (sent to the node, before that is recorded),
`mined` (its receipt read, before it is recorded).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from app.chain import outbox, repository
from app.chain import service as chain_service
from app.config import Settings
from app.lib.clients import open_clients
from app.main import DOCUMENTS


def _die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_at(step: str) -> None:
    if step == "signed":
        outbox._send = _die
    elif step == "sent":
        repository.mark_sent = _die
    elif step == "mined":
        move = repository.move

        async def moved(entry_id, status, to, **fields):
            if to == "mined":
                _die()
            return await move(entry_id, status, to, **fields)

        repository.move = moved
    else:
        raise SystemExit(f"unknown step {step!r}")


async def main(passes: int, step: str | None) -> None:
    if step is not None:
        _kill_at(step)
    settings = Settings(_env_file=None)  # from the environment the test gave it, never a .env file
    async with open_clients(settings, documents=DOCUMENTS) as clients:
        for _ in range(passes):
            await chain_service.process_outbox(clients, settings)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
