"""The dependency rule, kept by a test: ``registry`` imports neither ``resolver``, ``promotion_tracker``
nor aiohttp (ARCHITECTURE.md, "Three packages, one direction"). Every module of the package is read
with ``ast``, so imports inside functions and under ``TYPE_CHECKING`` count too."""

from __future__ import annotations

import ast
from pathlib import Path

import registry

PACKAGE = Path(registry.__file__).parent
FORBIDDEN = ("aiohttp", "resolver", "promotion_tracker")


def imported_packages(source: str) -> set[str]:
    """The top-level names of every absolute import in ``source`` (relative ones stay in the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_rule_sees_every_kind_of_import() -> None:
    source = (
        "import aiohttp.web as w\n"
        "from resolver.http import app\n"
        "def f():\n"
        "    import promotion_tracker\n"
        "from . import model\n"
        "from registry.model import Record\n"
    )
    assert imported_packages(source) == {"aiohttp", "resolver", "promotion_tracker", "registry"}


def test_registry_imports_neither_the_resolver_the_tracker_nor_aiohttp() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 40  # the whole package is read, stores included
    broken = {
        str(path.relative_to(PACKAGE.parent)): sorted(bad)
        for path in modules
        if (bad := imported_packages(path.read_text(encoding="utf-8")) & set(FORBIDDEN))
    }
    assert broken == {}
