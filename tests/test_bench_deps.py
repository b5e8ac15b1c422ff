"""``make bench`` works from a fresh clone: everything bench/ imports is installed by it.

A benchmark that stops with ``ModuleNotFoundError`` half way through ``make bench``
wastes the minutes of the benchmarks before it. Every module any bench/*.py imports
(at the top or inside a function) is the standard library's, SmallTable's own
(``ingestd``, ``tests``, bench/'s modules), or comes from a requirement that
``make bench`` installs: setup.py's ``install_requires`` and its ``test`` and
``bench`` extras.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BENCH_EXTRAS = ("test", "bench")


def setup_keywords() -> dict[str, object]:
    """The literal keyword arguments of setup.py's ``setup(...)`` call."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup"
    )
    return {
        keyword.arg: ast.literal_eval(keyword.value)
        for keyword in call.keywords
        if isinstance(keyword.value, ast.List | ast.Dict)
    }


def normalized(name: str) -> str:
    """A distribution's name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalized(re.match(r"[A-Za-z0-9_.-]+", requirement).group()) for requirement in requirements}


def imported_modules(path: Path) -> set[str]:
    """The top-level names of every absolute import in ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_import_of_bench_is_installed_by_make_bench():
    keywords = setup_keywords()
    extras = keywords["extras_require"]
    installed = requirement_names(keywords["install_requires"])
    for extra in BENCH_EXTRAS:
        installed |= requirement_names(extras.get(extra, []))
    own = {"ingestd", "tests"} | {path.stem for path in BENCH.glob("*.py")}
    provider = packages_distributions()
    missing = {}
    for path in sorted(BENCH.glob("*.py")):
        for module in imported_modules(path) - own - set(sys.stdlib_module_names):
            # a module not installed here is looked for under its own name (pyinstrument)
            distributions = {normalized(name) for name in provider.get(module, [module])}
            if not distributions & installed:
                missing.setdefault(path.name, []).append(module)
    assert not missing, (
        f"bench/ imports modules no requirement of setup.py that make bench installs provides: {missing}; "
        f"add them to setup.py's extras_require['bench']"
    )


def test_make_bench_installs_the_bench_extra():
    """``make bench`` installs the ``bench`` extra into the venv; ``make test`` does not need it."""
    dry_run = subprocess.run(
        ["make", "-n", "-B", "bench"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"pip install .*'\.\[[^]]*\bbench\b[^]]*\]'", dry_run), dry_run
    test_dry_run = subprocess.run(
        ["make", "-n", "-B", "test"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "bench]" not in test_dry_run, test_dry_run
