"""The code's shape is a contract: layers and domain boundaries, module size, HTTP only at the edge."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
MAX_MODULE_LINES = 420  # "about 400": a module past it splits by capability
DOMAINS = sorted(
    p.name for p in APP.iterdir() if p.is_dir() and p.name != "lib" and (p / "__init__.py").exists()
)


def _layer_modules() -> set[str]:
    """Every module name the layers contract lists below the HTTP edge (controllers, jobs, middleware)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")["layers"]
    return {part.strip(" ()") for layer in layers[1:] for part in layer.replace(":", "|").split("|")}


def test_the_import_contracts_hold():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:]


def test_no_module_in_app_passes_the_size_limit():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in APP.rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_services_and_repositories_know_nothing_of_http():
    offenders = []
    for domain in DOMAINS:
        for name in _layer_modules():
            path = APP / domain / f"{name}.py"
            if not path.exists():
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                modules = []
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    modules = [node.module]
                offenders += [f"{domain}/{name}.py: {m}" for m in modules if m.split(".")[0] == "litestar"]
    assert offenders == []


def test_no_domain_uses_another_domains_private_names():
    offenders = []
    for path in APP.rglob("*.py"):
        parts = path.relative_to(APP).parts
        own = parts[0] if len(parts) > 1 else None
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("app."):
                other = node.module.split(".")[1]
                for alias in node.names:
                    if other != own and other in DOMAINS and alias.name.startswith("_"):
                        offenders.append(f"{path.relative_to(ROOT)}: {node.module}.{alias.name}")
                    if other in DOMAINS and other != own:
                        aliases[alias.asname or alias.name] = other
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
            ):
                offenders.append(f"{path.relative_to(ROOT)}: {node.value.id}.{node.attr}")
    assert offenders == []
