"""
The shape of the tree, checked: imports run one way (no circle among
eventpipe's modules, lazy imports included), every room is of a readable
size, and no rule is written twice.
"""

from __future__ import annotations

import ast
import os
import re
from collections import defaultdict

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "eventpipe")

MODULE_LINES = 450
CLASS_LINES = 250
FUNCTION_LINES = 60
SHARED_LINES = 6

# Tables and SQL templates: long because what they hold is long, and read
# as a table or as the SQL they print, not as logic.
TABLES = frozenset(
    {
        "eventpipe.snowflake.parts.part_2_objects",  # the SQL of part 2
        "eventpipe.simulate.AcmEvents.event",  # the template of an ACM event
        "eventpipe.metrics.Metrics.__init__",  # the table of metric families
    }
)


def modules() -> dict[str, str]:
    """Every module of eventpipe, by dotted name: its path."""
    found = {}
    for directory, _, files in os.walk(ROOT):
        for filename in files:
            if filename.endswith(".py"):
                path = os.path.join(directory, filename)
                relative = os.path.relpath(path, os.path.dirname(ROOT))[: -len(".py")]
                name = relative.replace(os.sep, ".").removesuffix(".__init__")
                found[name] = path
    return found


def parsed(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as stream:
        return ast.parse(stream.read(), path)


def imports(name: str, path: str, known: dict[str, str]) -> set[str]:
    """The eventpipe modules C{name} imports, at the top or inside a function."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(parsed(path)):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            # Importing a module runs its packages' __init__ first.
            while target and target not in known:
                target = target.rpartition(".")[0]
            while target:
                if target != name:
                    found.add(target)
                target = target.rpartition(".")[0]
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of C{graph} (strongly connected parts of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            part = []
            while True:
                other = stack.pop()
                part.append(other)
                if other == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def oversized() -> dict[str, str]:
    """Every module, class and function past its size, with its size."""
    found = {}
    for name, path in modules().items():
        with open(path, encoding="utf-8") as stream:
            lines = len(stream.read().splitlines())
        if lines > MODULE_LINES:
            found[name] = f"module of {lines} lines"

        def walk(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    qualified = f"{prefix}.{child.name}"
                    size = (child.end_lineno or child.lineno) - child.lineno + 1
                    limit = CLASS_LINES if isinstance(child, ast.ClassDef) else FUNCTION_LINES
                    if size > limit and qualified not in TABLES:
                        found[qualified] = f"{type(child).__name__} of {size} lines"
                    walk(child, qualified)

        walk(parsed(path), name)
    return found


_TRIVIAL = re.compile(r"^(?:[)\]}],?|[)\]}]+:?|\"\"\"|else:|try:|finally:|return|pass|\.\.\.)$")


def declarations(path: str) -> set[int]:
    """The lines of a file's imports and signatures: declarations, not logic."""
    lines = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines.update(range(node.lineno, node.body[0].lineno))
    return lines


def significant(path: str) -> list[tuple[int, str]]:
    """
    A file's lines that carry logic: not blank, not comments, not lone
    brackets, not imports or signatures.
    """
    kept = []
    skipped = declarations(path)
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            text = line.strip()
            if number in skipped or not text or text.startswith("#") or _TRIVIAL.match(text):
                continue
            kept.append((number, text))
    return kept


def shared_runs(files: dict[str, str] | None = None) -> list[str]:
    """Places that share L{SHARED_LINES} or more identical lines of logic."""
    seen: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for name, path in sorted((modules() if files is None else files).items()):
        lines = significant(path)
        for start in range(len(lines) - SHARED_LINES + 1):
            window = tuple(text for _, text in lines[start : start + SHARED_LINES])
            seen[window].append((name, lines[start][0]))
    found = []
    for places in seen.values():
        distinct = [places[0]]
        for place in places[1:]:
            last = distinct[-1]
            if place[0] != last[0] or place[1] - last[1] >= SHARED_LINES:
                distinct.append(place)
        if len(distinct) > 1:
            found.append(" ~ ".join(f"{module}:{line}" for module, line in distinct))
    return found


class TreeTests(SynchronousTestCase):
    def test_no_import_circle(self) -> None:
        """Imports run one way: no circle among eventpipe's modules, lazy imports included."""
        known = modules()
        graph = {name: imports(name, path, known) for name, path in known.items()}
        self.assertEqual(circles(graph), [])

    def test_circle_found(self) -> None:
        """The check sees a circle, also one through a package."""
        self.assertEqual(
            circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}), [["a", "b", "c"]]
        )
        known = modules()
        self.assertIn(
            "eventpipe.spool",
            imports("eventpipe.config.table", known["eventpipe.config.table"], known),
        )

    def test_rooms_of_a_readable_size(self) -> None:
        """No module over 450 lines, no class over 250, no function over 60 (tables excepted by name)."""
        self.assertEqual(oversized(), {})

    def test_no_rule_written_twice(self) -> None:
        """No two places inside eventpipe/ share six identical lines of logic."""
        self.assertEqual(shared_runs(), [])

    def test_shared_run_found(self) -> None:
        """The check sees six shared lines of logic, and not shared signatures."""
        body = "".join(f"    x{n} = f({n})\n" for n in range(6))
        directory = self.mktemp()
        os.mkdir(directory)
        files = {}
        for name, signature in (("a", "def one(a: int) -> None:"), ("b", "def two() -> None:")):
            files[name] = os.path.join(directory, name + ".py")
            with open(files[name], "w") as stream:
                stream.write(f"import os\n\n\n{signature}\n{body}")
        self.assertEqual(shared_runs(files), ["a:5 ~ b:5"])
        with open(files["b"], "w") as stream:
            stream.write(f"def one(a: int) -> None:\n{body.replace('f(3)', 'g(3)')}")
        self.assertEqual(shared_runs(files), [])
