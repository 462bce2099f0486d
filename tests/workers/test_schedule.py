"""The worker's schedule: every periodic job has its cron."""

from workers.settings import WorkerSettings

PERIODIC = (
    "chain.process_outbox",
    "market.index_chain",
    "market.announce_chain",
    "assets.request_mints",
    "oracle.publish",
    "market.reconcile_chain",
    "oracle.reconcile_prices",
    "oracle.score_ledger",
    "oracle.refresh_due",
    "oracle.train_daily",
    "assets.flush_views",
    "media.sweep",
    "system.backup",
    "audit.archive",
)


def test_every_periodic_job_is_a_function_and_a_cron():
    functions = {f.name: f.coroutine for f in WorkerSettings.functions}
    crons = {c.name: c.coroutine for c in WorkerSettings.cron_jobs}
    for name in PERIODIC:
        assert name in functions, f"{name} is not a worker function"
        assert f"{name}.cron" in crons, f"{name} has no cron"
        assert crons[f"{name}.cron"] is functions[name], f"{name}.cron runs another coroutine"


def test_long_crons_carry_their_functions_limits():
    """arq gives a cron its own timeout and tries, not its function's: the long jobs say theirs again."""
    functions = {f.name: f for f in WorkerSettings.functions}
    crons = {c.name: c for c in WorkerSettings.cron_jobs}
    for name in ("system.backup", "audit.archive"):
        assert crons[f"{name}.cron"].timeout_s == functions[name].timeout_s > 300
        assert crons[f"{name}.cron"].max_tries == functions[name].max_tries == 3
