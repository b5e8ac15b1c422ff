"""The package's rooms: every module is in the map of docs/development.md, and imports only go down.

The rooms, lowest first: ``support`` and ``model`` know nothing of SmallTable's
flow, ``config`` every setting, ``store`` keeps what ``ingest`` decides, ``web``
shows what ``store`` holds, ``ops`` runs and watches them all, ``client`` (the
terminal client) talks to a running SmallTable over HTTP only, and the top-level
``daemon`` and ``cli`` wire everything. A module may import its own room and the
rooms below it; ``ingest`` and ``web`` are beside each other and never import
each other. Within ``web``, a view (a module with ``ROUTES``) never imports
another view: what views share lives in helpers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ingestd"
RANK = {
    "support": 0,
    "model": 1,
    "config": 2,
    "store": 3,
    "ingest": 4,
    "web": 4,
    "ops": 5,
    "client": 5,
    "top": 6,
}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def room(module: str) -> str:
    """``ingestd.store.database`` → ``store``, ``ingestd.config`` → ``config``, ``ingestd.cli`` → ``top``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "support"  # the package itself: its version, nothing else
    return parts[1] if parts[1] in RANK else "top"


def dotted(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """The ingestd modules ``path`` imports, as dotted names (relative imports resolved)."""
    name = dotted(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("ingestd"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("ingestd"))
    existing = {dotted(p) for p in modules()}
    return {target for target in found if target in existing}


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_down_the_rooms(path):
    mine = room(dotted(path))
    for target in imports(path):
        theirs = room(target)
        if mine == theirs:
            continue
        assert RANK[theirs] < RANK[mine], f"{dotted(path)} ({mine}) imports {target} ({theirs})"


def test_no_view_imports_another_view():
    web = sorted((PACKAGE / "web").glob("*.py"))
    views = {dotted(p) for p in web if re.search(r"^ROUTES = ", p.read_text(), re.M)}
    assert len(views) >= 5
    for path in web:
        if path.name == "__init__.py":
            continue
        shared = imports(path) & views
        assert not shared, f"{dotted(path)} imports the view(s) {sorted(shared)}"


def documented() -> set[str]:
    """Every path the module table of docs/development.md names, ``{a,b}`` expanded."""
    text = (ROOT / "docs" / "development.md").read_text()
    paths = set()
    for cell in re.findall(r"^\| `([^`]+)`", text, re.M):
        braces = re.search(r"\{([^}]+)\}", cell)
        if braces:
            paths.update(cell.replace(braces[0], option) for option in braces[1].split(","))
        else:
            paths.add(cell)
    return paths


def test_every_module_is_in_the_map_and_every_entry_exists():
    on_disk = {str(p.relative_to(ROOT)) for p in modules()}
    listed = {p for p in documented() if p.startswith("ingestd/") and p.endswith(".py")}
    assert sorted(on_disk - listed) == [], "modules missing from docs/development.md's table"
    assert sorted(listed - on_disk) == [], "docs/development.md lists modules that are gone"


def test_no_module_passes_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules() if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}, "a module of more than 500 lines may have two jobs: split it"
