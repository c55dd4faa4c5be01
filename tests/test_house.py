"""The house (#20): the import-circle checker."""

from __future__ import annotations

from pathlib import Path

from import_graph import describe, import_cycles, import_edges


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_import_cycles_sees_deferred_imports_and_names_submodules_only(tmp_path: Path) -> None:
    package = _write(tmp_path, {
        "pkg/__init__.py": "from .c import y\n",
        # a -> b -> a, the import of b deferred to a function body
        "pkg/a.py": "import os\n\ndef f():\n    from . import b\n",
        "pkg/b.py": "from pkg.a import f\nimport pkg.a.nothing\n",  # the longest prefix that is a module: pkg.a
        # c -> d -> pkg -> c: `from . import name` of a name that is no submodule is the package
        "pkg/c.py": "from . import d\ny = 1\n",
        "pkg/d.py": "from . import helper\n",
        # f -> pkg.sub.e and pkg.sub -> f: no circle, as `from .sub import e` is an edge to e alone
        "pkg/f.py": "from .sub import e\n",
        "pkg/sub/__init__.py": "from .. import f\n",
        "pkg/sub/e.py": "",
    })
    edges = import_edges(package)
    assert edges["pkg.f"] == {"pkg.sub.e": ["pkg/f.py:1"]}
    assert edges["pkg.b"] == {"pkg.a": ["pkg/b.py:1", "pkg/b.py:2"]}
    assert "os" not in edges["pkg.a"]  # modules outside the package are left out
    assert import_cycles(package) == [["pkg", "pkg.c", "pkg.d", "pkg"], ["pkg.a", "pkg.b", "pkg.a"]]
    assert describe(["pkg.a", "pkg.b", "pkg.a"], edges).splitlines() == [
        "pkg.a -> pkg.b -> pkg.a",
        "    pkg.a -> pkg.b: pkg/a.py:4",
        "    pkg.b -> pkg.a: pkg/b.py:1, pkg/b.py:2",
    ]
