"""`make bench`: every benchmark in scripts/bench_*.py, one after another, each with its own baseline."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main() -> int:
    names = sorted(path.stem for path in Path(__file__).parent.glob("bench_*.py"))
    selected = [name for name in names if not sys.argv[1:] or any(arg in name for arg in sys.argv[1:])]
    failed = []
    for name in selected:
        print(f"\n=== {name} ===", flush=True)
        module = importlib.import_module(f"scripts.{name}")
        sys.argv = [name]
        if module.main() not in (None, 0):
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
