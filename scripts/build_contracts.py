"""Compile the Vyper contracts in `infra/contracts/` into `infra/contracts/build/<Name>.json` (ABI, bytecode).

The artifacts are committed, so the platform deploys without a compiler at run time; a test compiles
again and fails when they differ from the sources. `--check` does the same here and exits 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from importlib.metadata import version

from vyper.cli.vyper_compile import compile_files

from app.chain.artifacts import BUILD, CONTRACTS

SOURCES = BUILD.parent


def compile_contract(name: str) -> dict:
    """The artifact of one contract: its ABI, creation bytecode, compiler and the sha256 of the two."""
    source = SOURCES / f"{name}.vy"
    output = compile_files([source], ("abi", "bytecode", "bytecode_runtime"))[source]
    artifact = {
        "contractName": name,
        "compiler": f"vyper {version('vyper')}",
        "libraries": {"snekmate": version("snekmate")},
        "abi": output["abi"],
        "bytecode": output["bytecode"],
        "deployedBytecode": output["bytecode_runtime"],
    }
    artifact["artifactHash"] = artifact_hash(artifact)
    return artifact


def artifact_hash(artifact: dict) -> str:
    """sha256 of the ABI and creation bytecode: what a deployment records to say what it deployed."""
    body = json.dumps({"abi": artifact["abi"], "bytecode": artifact["bytecode"]}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def render(artifact: dict) -> str:
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if an artifact is out of date")
    args = parser.parse_args()
    stale = []
    BUILD.mkdir(exist_ok=True)
    for name in CONTRACTS:
        path = BUILD / f"{name}.json"
        text = render(compile_contract(name))
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run `make contracts`)", file=sys.stderr)
        return 1
    print(f"{'stale' if args.check else 'built'}: {', '.join(stale) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
