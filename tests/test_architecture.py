"""The dependency graph of `src/dermsynth` (docs/architecture.md, "Layers"): read from the code's own imports.

- no import cycle between modules (every import counts, deferred ones too: a cycle hidden inside a function
  is still a cycle);
- no upward import: a package imports only packages on a lower layer (`LAYERS`), never a peer or one above;
- an import inside a function is deferred on purpose and says why: `# deferred: <reason>` on its line, or on
  the comment line directly above its block of imports.

Static (ast): nothing of the project is imported, so this runs in a second.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "dermsynth"

# Bottom to top; a package may import the packages of lower layers only. "core" is every top-level module of
# dermsynth (errors, options, config, outputs, locks, fingerprint, checkpoints, devices, figures, backbones, …)
# except the command line, which assembles every stage and is the top.
LAYERS: list[set[str]] = [
    {"core"},
    {"data"},
    {"gan"},
    {"metrics", "synthetic"},
    {"latent", "federated"},
    {"classify"},
    {"explain", "review", "bench"},
    {"cli"},
]
TOP_MODULES = {"dermsynth.cli", "dermsynth.__main__"}


def rank(package: str) -> int:
    for level, members in enumerate(LAYERS):
        if package in members:
            return level
    raise AssertionError(f"package dermsynth.{package} is not in tests/test_architecture.py LAYERS "
                         "(add it there and to docs/architecture.md)")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    if module in TOP_MODULES:
        return "cli"
    parts = module.split(".")
    if len(parts) >= 2 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "core"


def imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dermsynth modules an import statement names (for `from X import a`, `X.a` when that is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    names = [target]
    for alias in node.names:
        candidate = f"{target}.{alias.name}"
        if (SRC / Path(*candidate.split("."))).with_suffix(".py").exists() or \
                (SRC / Path(*candidate.split(".")) / "__init__.py").exists():
            names.append(candidate)
    return names


class Module:
    def __init__(self, path: Path):
        self.path, self.name = path, module_name(path)
        self.lines = path.read_text().splitlines()
        self.tree = ast.parse("\n".join(self.lines))
        self.imports: list[tuple[ast.AST, str, bool]] = []  # (node, target, inside a function)
        self._walk(self.tree, inside=False)

    def _walk(self, node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in imported(child, self.name, self.path.name == "__init__.py"):
                    self.imports.append((child, target, inside))
            self._walk(child, inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    def says_deferred(self, node: ast.AST) -> bool:
        """`# deferred:` on the import's own lines or on the comment directly above its block of imports."""
        own = self.lines[node.lineno - 1: node.end_lineno]
        if any("# deferred" in line for line in own):
            return True
        row = node.lineno - 2
        while row >= 0:
            text = self.lines[row].strip()
            if text.startswith("#"):
                return "# deferred" in text
            if not (text.startswith("import ") or text.startswith("from ") or text.endswith(")")
                    or text.endswith(",")):
                return False
            row -= 1
        return False


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = Module(path)
        found[module.name] = module
    return found


def internal_edges(modules: dict[str, Module]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, module in modules.items():
        for _, target, _ in module.imports:
            if target in modules and target != name and not name.startswith(target + "."):
                edges[name].add(target)  # (a package's own __init__ is not a cycle with its modules)
    return edges


def test_no_import_cycles(modules):
    edges = internal_edges(modules)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    described = ["  " + " ↔ ".join(c) + "\n    " + "; ".join(
        f"{a} → {b}" for a in c for b in sorted(edges[a]) if b in c) for c in cycles]
    assert not cycles, "import cycles (move the shared piece down, or split the module):\n" + "\n".join(described)


def test_no_upward_or_sideways_imports(modules):
    wrong = []
    for name, module in modules.items():
        mine = package_of(name)
        for node, target, _ in module.imports:
            if target not in modules:
                continue
            theirs = package_of(target)
            if theirs != mine and rank(theirs) >= rank(mine):
                wrong.append(f"  {module.path.relative_to(SRC.parent)}:{node.lineno}: {mine} imports {target} "
                             f"({theirs}, layer {rank(theirs)} ≥ {rank(mine)})")
    assert not wrong, ("imports against the layer order of docs/architecture.md (move the shared piece to a lower "
                       "layer):\n" + "\n".join(sorted(set(wrong))))


def test_imports_inside_functions_say_why(modules):
    silent = []
    for module in modules.values():
        for node, target, inside in module.imports:
            if inside and not module.says_deferred(node):
                silent.append(f"  {module.path.relative_to(SRC.parent)}:{node.lineno}: {target}")
    assert not silent, ("imports inside functions without a `# deferred: <reason>` comment (move them to the "
                        "module's top, or say which heavy or optional dependency is deferred):\n"
                        + "\n".join(sorted(set(silent))))


def test_layers_are_documented():
    text = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    for members in LAYERS:
        for package in members:
            assert f"`{package}`" in text, f"docs/architecture.md's Layers section does not name `{package}`"
