"""The two commands, checked without installing anything again."""

import ast
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=BASE_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def test_bootstrap_offers_run_and_test():
    result = run("bootstrap.py", "--help")

    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout
    assert "test" in result.stdout
    assert "bootstrap:" not in result.stdout  # --help sets nothing up


def test_bootstrap_refuses_an_unknown_command_before_setting_up():
    result = run("bootstrap.py", "deploy")

    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert "bootstrap:" not in result.stdout


def test_serve_is_a_management_command_with_host_and_port():
    result = run("manage.py", "help", "serve")

    assert result.returncode == 0, result.stderr
    assert "--host" in result.stdout
    assert "--port" in result.stdout


def test_bootstrap_needs_nothing_outside_the_standard_library():
    tree = ast.parse((BASE_DIR / "bootstrap.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }

    assert imported <= set(sys.stdlib_module_names) | {"__future__"}
