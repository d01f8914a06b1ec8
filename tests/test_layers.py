"""No module imports a layer above it (docs/architecture.md): the house stays readable from the bottom up."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = [
    {"utils"},
    {"schema"},
    {"dataset", "net", "evaluation", "losses", "optim"},
    {"recipe"},
    {"run_folder"},
    {"inference"},
    {"engine"},
    {"train", "embed", "retrieve", "export", "index", "tools", "benchmarks"},
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def modules():
    for path in sorted(REPO.rglob("*.py")):
        top = path.relative_to(REPO).parts[0].removesuffix(".py")
        if top in RANK:
            yield path, top


def imported_packages(path):
    """Top-level project packages that ``path`` imports, wherever in the file the import stands."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        yield from (name.split(".")[0] for name in names if name.split(".")[0] in RANK)


@pytest.mark.parametrize("path, top", list(modules()),
                         ids=lambda value: str(value.relative_to(REPO)) if isinstance(value, Path) else value)
def test_a_module_imports_only_its_own_layer_and_those_below(path, top):
    above = sorted({package for package in imported_packages(path) if RANK[package] > RANK[top]})
    assert above == [], f"{path.relative_to(REPO)} ({top}) imports {above}, which lie above it"


def test_every_package_and_top_level_command_has_a_layer():
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")} - {"tests"}
    commands = {path.stem for path in REPO.glob("*.py")}
    assert packages | commands <= set(RANK), sorted((packages | commands) - set(RANK))
