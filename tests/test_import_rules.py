"""The import rules of ``ivr/``, read from the source with :mod:`ast` (nothing is imported).

1. **Protocol layers import no domain code.**  A module of ``ivr.ami`` or ``ivr.agi``
   imports from ``ivr`` only its own package and the leaf utilities :data:`LEAVES`
   (``ivr.errors``, ``ivr.log``, ``ivr.metrics``, ``ivr.privacy``) — not the other
   protocol package either.  The leaves themselves import nothing from ``ivr`` but each
   other, so the rule also holds transitively.
2. **Only the emulator's own package, the demo and the CLI import the emulator**:
   ``ivr.sim.*``, ``ivr.demo`` and ``ivr.cli`` (which loads ``ivr.sim.cli`` by name from
   ``COMMAND_MODULES``; the per-package ``cli`` modules do not need ``ivr.sim``).
   Tests and benches are not under ``ivr/`` and may import it.
3. **No import cycles**, at two levels:

   * between modules, counting imports inside functions too (a function-local import
     is still a dependency; it only defers the cycle to run time);
   * between packages: each sub-package of ``ivr`` (``ivr.ami``, ``ivr.events``, …) and
     each top-level module (``ivr.bridge``, ``ivr.config``, …) is one node.  The
     command-line modules (``cli.py``, ``*_cli.py``, ``__main__.py``) are entry points on
     top of everything, so they are not part of their package's node (``ivr.events.cli``
     reads the settings model ``ivr.config``, which holds ``ivr.events.config``); rule 4
     keeps them on top.

   Imports under ``if TYPE_CHECKING:`` never run and are left out of the cycle rules
   (they count for rules 1, 2 and 4).
4. **Nothing imports a command-line module** except ``ivr.__main__`` importing
   ``ivr.cli``.
5. **Event delivery does not import the reference ticket backend**: ``ivr.ticketsink``
   is imported only by its own package and the demo (``ivr.cli`` loads
   ``ivr.ticketsink.cli`` by name).  The sink may import what it shares with delivery
   (``ivr.events.schema``, ``ivr.events.signing``); ``ivr.events``, the bridge and the
   IVR never import the sink, so ``ivr serve`` carries no reference backend.

Each rule is a function over an import graph; the tests run them on the real tree and
on small synthetic graphs that break each rule, so a rule that can never fail is noticed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ("ivr.ami", "ivr.agi")
LEAVES = frozenset({"ivr.errors", "ivr.log", "ivr.metrics", "ivr.privacy"})
SIM = "ivr.sim"
SIM_IMPORTERS = frozenset({"ivr.demo", "ivr.cli"})
SINK = "ivr.ticketsink"
SINK_IMPORTERS = frozenset({"ivr.demo", "ivr.cli"})


@dataclass(frozen=True)
class Import:
    target: str  # the ivr module imported (the longest existing prefix of the name)
    line: int
    local: bool = False  # inside a function
    typing_only: bool = False  # under ``if TYPE_CHECKING:``


Graph = Mapping[str, Iterable[Import]]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path = ROOT) -> dict[str, list[Import]]:
    """Every module under ``root/ivr`` → the ``ivr`` modules it imports."""
    files = {_module_name(p, root): p for p in sorted((root / "ivr").rglob("*.py"))}
    graph: dict[str, list[Import]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[module] = _imports(tree, package, set(files))
    return graph


def _imports(tree: ast.Module, package: str, modules: set[str]) -> list[Import]:
    """The ``ivr`` imports of one module (``package``: where relative imports start)."""
    found: list[Import] = []

    def add(name: str, node: ast.stmt, local: bool, typing_only: bool) -> None:
        if name != "ivr" and not name.startswith("ivr."):
            return
        while name and name not in modules:  # `from ivr.x import name`: a name in ivr.x
            name = name.rpartition(".")[0]
        if name:
            found.append(Import(name, node.lineno, local, typing_only))

    def walk(nodes: Iterable[ast.AST], local: bool, typing_only: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node, local, typing_only)
            elif isinstance(node, ast.ImportFrom):
                name = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = parts[: len(parts) - node.level + 1]
                    name = ".".join([*base, *([node.module] if node.module else [])])
                for alias in node.names:  # `from ivr.x import y`: y may be a module
                    add(f"{name}.{alias.name}", node, local, typing_only)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                walk(node.body, local, True)
                walk(node.orelse, local, typing_only)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                walk(ast.iter_child_nodes(node), True, typing_only)
            else:
                walk(ast.iter_child_nodes(node), local, typing_only)

    walk(tree.body, False, False)
    return found


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _is_cli(module: str) -> bool:
    last = module.rpartition(".")[2]
    return last in ("cli", "__main__") or last.endswith("_cli")


# -- the rules: each returns its violations as readable lines ----------------------------


def protocol_violations(graph: Graph) -> list[str]:
    out = []
    for module, imports in graph.items():
        own = next((p for p in PROTOCOL if _in(module, p)), None)
        if own is None and module not in LEAVES:
            continue
        for imp in imports:
            if imp.target in LEAVES or (own is not None and _in(imp.target, own)):
                continue
            what = f"protocol layer {own}" if own else "leaf utility"
            out.append(f"{module}:{imp.line} imports {imp.target} ({what} may import only "
                       f"{'its own package and ' if own else ''}{', '.join(sorted(LEAVES))})")
    return out


def sim_violations(graph: Graph) -> list[str]:
    return [f"{module}:{imp.line} imports the emulator ({imp.target}); only ivr.sim, "
            f"{', '.join(sorted(SIM_IMPORTERS))} may"
            for module, imports in graph.items()
            if not _in(module, SIM) and module not in SIM_IMPORTERS
            for imp in imports if _in(imp.target, SIM)]


def ticketsink_violations(graph: Graph) -> list[str]:
    return [f"{module}:{imp.line} imports the reference ticket backend ({imp.target}); only "
            f"{SINK}, {', '.join(sorted(SINK_IMPORTERS))} may (event delivery must not)"
            for module, imports in graph.items()
            if not _in(module, SINK) and module not in SINK_IMPORTERS
            for imp in imports if _in(imp.target, SINK)]


def cli_violations(graph: Graph) -> list[str]:
    return [f"{module}:{imp.line} imports the command-line module {imp.target}"
            for module, imports in graph.items()
            for imp in imports
            if _is_cli(imp.target) and imp.target != module
            and (module, imp.target) != ("ivr.__main__", "ivr.cli")]


def _cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _describe(component: list[str], edges: Mapping[str, set[str]]) -> str:
    inside = set(component)
    links = [f"{a} -> {b}" for a in component for b in sorted(edges.get(a, ())) if b in inside]
    return f"import cycle among {', '.join(component)}: {'; '.join(links)}"


def module_cycles(graph: Graph) -> list[str]:
    edges = {m: {i.target for i in imps if not i.typing_only and i.target != m}
             for m, imps in graph.items()}
    return [_describe(c, edges) for c in _cycles(edges)]


def _package(module: str) -> str:
    """The node of ``module`` in the package graph: ``ivr.<sub-package>`` or the
    top-level module; a command-line module is its own node."""
    parts = module.split(".")
    if _is_cli(module) or len(parts) <= 2:
        return module
    return ".".join(parts[:2])


def package_cycles(graph: Graph) -> list[str]:
    edges: dict[str, set[str]] = {}
    for module, imports in graph.items():
        src = _package(module)
        node = edges.setdefault(src, set())
        for imp in imports:
            dst = _package(imp.target)
            if not imp.typing_only and dst != src:
                node.add(dst)
    return [_describe(c, edges) for c in _cycles(edges)]


RULES = {
    "protocol": protocol_violations,
    "sim": sim_violations,
    "ticketsink": ticketsink_violations,
    "cli": cli_violations,
    "module-cycles": module_cycles,
    "package-cycles": package_cycles,
}


# -- the real tree ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Import]]:
    return import_graph()


def test_the_graph_is_read(graph: dict[str, list[Import]]) -> None:
    """Guards against a reader that finds nothing (every rule would pass)."""
    assert {"ivr.ami.client", "ivr.agi.server", "ivr.sim.emulator", "ivr.demo",
            "ivr.ticketsink.server", "ivr.events.pusher"} <= set(graph)
    assert Import("ivr.events.signing", 0) in [
        Import(i.target, 0) for i in graph["ivr.ticketsink.server"]]
    assert Import("ivr.sim.emulator", 0) in [Import(i.target, 0) for i in graph["ivr.demo"]]
    assert any(i.local for imps in graph.values() for i in imps)  # function-local seen
    assert any(i.typing_only for imps in graph.values() for i in imps)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_ivr_follows_the_import_rules(graph: dict[str, list[Import]], rule: str) -> None:
    violations = RULES[rule](graph)
    assert violations == [], "\n".join(violations)


# -- each rule can fail -----------------------------------------------------------------


def _graph(spec: Mapping[str, Iterable[str | Import]]) -> dict[str, list[Import]]:
    return {m: [i if isinstance(i, Import) else Import(i, 1) for i in imps]
            for m, imps in spec.items()}


CLEAN = {
    "ivr.errors": [], "ivr.privacy": [], "ivr.log": ["ivr.privacy"], "ivr.metrics": [],
    "ivr.ami.codec": ["ivr.ami.messages", "ivr.errors"], "ivr.ami.messages": [],
    "ivr.agi.server": ["ivr.agi.codec", "ivr.log", "ivr.metrics"], "ivr.agi.codec": [],
    "ivr.events.builder": ["ivr.ami.messages", "ivr.calls.model"],
    "ivr.calls.model": ["ivr.ami.messages"],
    "ivr.sim.emulator": ["ivr.sim.pbx", "ivr.ami.codec", "ivr.events.builder"],
    "ivr.sim.pbx": [Import("ivr.sim.emulator", 3, typing_only=True)],
    "ivr.config": ["ivr.events.config"], "ivr.events.config": [],
    "ivr.events.cli": ["ivr.config", "ivr.events.builder"],
    "ivr.events.signing": [], "ivr.events.pusher": ["ivr.events.signing"],
    "ivr.ticketsink.server": ["ivr.events.signing", "ivr.ticketsink.tickets"],
    "ivr.ticketsink.tickets": [], "ivr.ticketsink.cli": ["ivr.config", "ivr.ticketsink.server"],
    "ivr.demo": ["ivr.sim.emulator", "ivr.config", "ivr.ticketsink.server"],
    "ivr.cli": ["ivr.log"],
    "ivr.__main__": ["ivr.cli"],
}

BROKEN = [
    ("protocol", {"ivr.ami.codec": ["ivr.events.builder"]}, "ivr.ami.codec:1 imports ivr.events"),
    ("protocol", {"ivr.agi.server": ["ivr.ami.codec"]}, "ivr.agi.server:1 imports ivr.ami"),
    ("protocol", {"ivr.ami.codec": [Import("ivr.calls.model", 7, typing_only=True)]},
     "ivr.ami.codec:7 imports ivr.calls.model"),
    ("protocol", {"ivr.log": ["ivr.config"]}, "ivr.log:1 imports ivr.config (leaf"),
    ("sim", {"ivr.events.builder": [Import("ivr.sim.pbx", 9, local=True)]},
     "ivr.events.builder:9 imports the emulator (ivr.sim.pbx)"),
    ("sim", {"ivr.dialplan.cli": ["ivr.sim"]}, "ivr.dialplan.cli:1 imports the emulator"),
    ("ticketsink", {"ivr.events.pusher": ["ivr.events.signing", "ivr.ticketsink.tickets"]},
     "ivr.events.pusher:1 imports the reference ticket backend (ivr.ticketsink.tickets)"),
    ("ticketsink", {"ivr.bridge": [Import("ivr.ticketsink.server", 4, local=True)]},
     "ivr.bridge:4 imports the reference ticket backend"),
    ("cli", {"ivr.config": ["ivr.events.cli"]}, "ivr.config:1 imports the command-line module"),
    ("module-cycles", {"ivr.calls.model": [Import("ivr.events.builder", 5, local=True)]},
     "import cycle among ivr.calls.model, ivr.events.builder"),
    ("module-cycles", {"ivr.sim.pbx": ["ivr.sim.emulator"]},
     "import cycle among ivr.sim.emulator, ivr.sim.pbx"),
    ("package-cycles", {"ivr.events.config": ["ivr.config"]},
     "import cycle among ivr.config, ivr.events"),
    ("package-cycles", {"ivr.calls.model": ["ivr.ami.messages", "ivr.events.config"]},
     "import cycle among ivr.calls, ivr.events"),
]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_synthetic_clean_graph_passes(rule: str) -> None:
    assert RULES[rule](_graph(CLEAN)) == []


@pytest.mark.parametrize(("rule", "change", "message"), BROKEN)
def test_each_rule_reports_what_breaks_it(rule: str, change: dict[str, list[str | Import]],
                                          message: str) -> None:
    broken = _graph({**CLEAN, **change})
    violations = RULES[rule](broken)
    assert any(message in v for v in violations), violations
    others = {name: fn(broken) for name, fn in RULES.items() if name != rule}
    assert all(v == [] or name in ("module-cycles", "package-cycles")
               for name, v in others.items()), others


def test_relative_and_function_local_imports_are_read(tmp_path: Path) -> None:
    pkg = tmp_path / "ivr" / "ami"
    pkg.mkdir(parents=True)
    (tmp_path / "ivr" / "__init__.py").write_text("")
    (tmp_path / "ivr" / "events.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "codec.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import messages\n"
        "if TYPE_CHECKING:\n"
        "    from ivr.events import X\n"
        "def f():\n"
        "    from ..events import Y\n"
    )
    (pkg / "messages.py").write_text("")
    g = import_graph(tmp_path)
    assert g["ivr.ami.codec"] == [
        Import("ivr.ami.messages", 2),
        Import("ivr.events", 4, typing_only=True),
        Import("ivr.events", 6, local=True),
    ]
    assert protocol_violations(g) == [
        "ivr.ami.codec:4 imports ivr.events (protocol layer ivr.ami may import only its own "
        "package and ivr.errors, ivr.log, ivr.metrics, ivr.privacy)",
        "ivr.ami.codec:6 imports ivr.events (protocol layer ivr.ami may import only its own "
        "package and ivr.errors, ivr.log, ivr.metrics, ivr.privacy)",
    ]
