"""The package's shape: no import circles, small modules (docs/design.md §3)."""

import ast
from pathlib import Path

import fastrms

PACKAGE = Path(fastrms.__file__).parent
MAX_LINES = 300


def _module_name(path):
    parts = ("fastrms",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path, module):
    """The fastrms modules ``module`` imports, at its top level or lazily inside a function: a
    lazy import that closes a circle is still a circle (the modules know of each other)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.Import):
            found.update(a.name for a in n.names if a.name.startswith("fastrms"))
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (n.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("fastrms"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in n.names)
    return found


def import_graph():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in _imports(p, m) if i in modules and i != m}
            for m, p in modules.items()}


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, stack)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def _without_package_inits(graph):
    """A package's ``__init__`` importing its submodules is not a circle with them."""
    return {m: {i for i in deps if not (m.startswith(i + ".") and i in graph)}
            for m, deps in graph.items()}


def test_no_import_circles():
    cycle = find_cycle(_without_package_inits(import_graph()))
    assert cycle is None, " -> ".join(cycle)


def test_the_circle_check_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_over_300_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
