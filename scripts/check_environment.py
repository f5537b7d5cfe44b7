"""Check that the running Python environment holds exactly the locked set (requirements/lock.txt).

    .venv/bin/python scripts/check_environment.py     # exit 1, listing each difference, when it does not

Every package in the lock must be installed at the locked version. Besides the lock, only PyTorch (installed
first, from requirements/torch-cpu.txt or a CUDA build of your choosing), the packages a CUDA build of PyTorch
brings (nvidia-*, cuda-*, triton), pip and this project itself may be installed. Standard library only, so it
runs before anything else works.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements" / "lock.txt"
#: installed beside the lock on purpose: torch and what a CUDA build of it pulls in, pip, the project
OUTSIDE_THE_LOCK = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*|pip|ww-pipeline)$")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path: Path = LOCK) -> dict[str, str]:
    """name -> version for every pin in the lock file."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if m:
            pins[normalise(m.group(1))] = m.group(2)
    if not pins:
        raise SystemExit(f"{path}: no pins found")
    return pins


def installed() -> dict[str, str]:
    return {normalise(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def differences(pins: dict[str, str], have: dict[str, str]) -> list[str]:
    out = []
    for name, version in sorted(pins.items()):
        if name not in have:
            out.append(f"missing: {name}=={version}")
        elif have[name] != version:
            out.append(f"wrong version: {name} {have[name]} installed, the lock has {version}")
    for name in sorted(set(have) - set(pins)):
        if not OUTSIDE_THE_LOCK.match(name):
            out.append(f"not in the lock: {name} {have[name]}")
    return out


def main() -> int:
    pins = locked()
    problems = differences(pins, installed())
    if problems:
        print(f"this environment ({sys.prefix}) is not the locked set in {LOCK.name}:", file=sys.stderr)
        for line in problems:
            print("  " + line, file=sys.stderr)
        print("fix: rm -rf .venv && make setup   (or scripts/lock.sh after changing pyproject.toml)", file=sys.stderr)
        return 1
    print(f"environment matches {LOCK.name}: {len(pins)} locked packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
