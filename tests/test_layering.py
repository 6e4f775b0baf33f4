"""The package layering of the design card, checked on every import statement."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = {"schemas", "stages", "pipeline", "finsta_model", "cli"}
ALLOWED = {
    "schemas": set(),
    "stages": {"schemas"},
    "pipeline": {"stages", "schemas"},
    "finsta_model": {"schemas"},
}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_layering_allows(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    offenders = {}
    for path in files:
        bad = imported_packages(path) - ALLOWED[package] - {package}
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}


def test_layering_check_sees_imports():
    sample = REPO / "tests" / "test_layering.py"
    assert imported_packages(sample) == set()
    assert "schemas" in imported_packages(REPO / "schemas" / "store.py")
