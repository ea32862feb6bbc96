"""The benchmarking modules import each other in one direction only (no cycles, lazy or not)."""

from __future__ import annotations

import ast
from pathlib import Path

import nnunet_iph.benchmarking as package

PACKAGE = package.__name__


def _imports(path: Path) -> set[str]:
    """Modules of this package ``path`` imports anywhere (functions too), except under ``TYPE_CHECKING``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE + "."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE + "."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_no_import_cycles_between_benchmarking_modules():
    graph = {f"{PACKAGE}.{p.stem}": _imports(p) for p in Path(package.__file__).parent.glob("*.py")
             if p.stem != "__init__"}
    done: set[str] = set()

    def visit(module: str, chain: list[str]) -> None:
        assert module not in chain, "import cycle: " + " -> ".join([*chain, module])
        if module in done:
            return
        for dep in sorted(graph.get(module, ())):
            visit(dep, [*chain, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert f"{PACKAGE}.workspace" in graph["nnunet_iph.benchmarking.gpu"]
