# Two commands do everything: `make run` (the whole platform on embedded services) and `make test`.
# Each builds .venv from uv.lock when it is missing or stale, and starts at once when it is current.

UV_VERSION := 0.13.8
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
PY := .venv/bin/python
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test seed enqueue backup restore bench contract contracts deploy lint format clean

run: .venv/.synced node_modules/.synced
	$(PY) -m scripts.run

test: .venv/.synced node_modules/.synced
	$(PY) -m pytest $(ARGS)

seed: .venv/.synced
	$(PY) -m scripts.seed $(ARGS)

enqueue: .venv/.synced
	$(PY) -m scripts.enqueue $(ARGS)

backup: .venv/.synced
	$(PY) -m scripts.backup $(ARGS)

restore: .venv/.synced
	$(PY) -m scripts.restore $(ARGS)

bench: .venv/.synced node_modules/.synced
	$(PY) -m scripts.bench $(ARGS)

contracts: .venv/.synced
	$(PY) -m scripts.build_contracts $(ARGS)

deploy: .venv/.synced
	$(PY) -m scripts.deploy $(ARGS)

contract: .venv/.synced
	$(PY) -m scripts.contract $(ARGS)

lint: .venv/.synced
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/lint-imports

format: .venv/.synced
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

# The local chain: anvil ships as a binary inside its npm package. Without npm the chain stays off.
# `npm install` (with the lock, writing nothing back) rather than `npm ci`: the lock records only the
# platform binary it was made on, and `npm ci` refuses a lock without the other platforms' optional ones.
node_modules/.synced: package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm install --no-save --ignore-scripts --no-audit --no-fund && touch $@; \
	else \
		echo "npm not found: the local chain (anvil) is off; install Node.js to enable it"; \
	fi

clean:
	rm -rf .venv .tools node_modules .pytest_cache
