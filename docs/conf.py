"""Sphinx configuration of eventpipe's manual (``tox -e docs``)."""

import ast
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from eventpipe import __version__  # noqa: E402
from eventpipe.config.reference import option_reference  # noqa: E402

project = "eventpipe"
author = "the eventpipe developers"
release = version = __version__
root_doc = "index"
exclude_patterns = ["_build", "_generated"]
html_theme = "alabaster"
man_pages = [
    (
        "man/eventpipe",
        "eventpipe",
        "receive Avigilon ACM events over TCP and deliver them as batches for Snowflake",
        [author],
        1,
    )
]


def _first_line(path: str) -> str:
    """The first sentence line of a module's docstring."""
    with open(path, encoding="utf-8") as stream:
        doc = ast.get_docstring(ast.parse(stream.read())) or ""
    return " ".join(doc.split("\n\n")[0].split()) or "-"


def module_tree() -> str:
    """Every module of eventpipe, as a literal block: its path and what it is."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for directory, folders, files in sorted(os.walk(os.path.join(here, "eventpipe"))):
        folders.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                rows.append((os.path.relpath(path, here), _first_line(path)))
    width = max(len(path) for path, _ in rows) + 2
    body = "\n".join(f"   {path:<{width}}{text}" for path, text in rows)
    return f"::\n\n{body}\n"


def _write(name: str, text: str) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(os.path.join(here, "_generated"), exist_ok=True)
    path = os.path.join(here, "_generated", name)
    try:
        with open(path, encoding="utf-8") as stream:
            if stream.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)


def _generate(app: object) -> None:
    """What the manual includes from the code: it cannot drift from it."""
    _write("options.rst", option_reference())
    _write("modules.rst", module_tree())


def setup(app: object) -> None:
    app.connect("builder-inited", _generate)  # type: ignore[attr-defined]
