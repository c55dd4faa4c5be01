"""The house (#20): no import circles under fewshot/, no module over 600 lines, no function of the training loop
over 80 lines, the generation API in its homes."""

from __future__ import annotations

import ast
from pathlib import Path
from types import FunctionType

from import_graph import describe, import_cycles, import_edges

FEWSHOT = Path(__file__).resolve().parents[1] / "fewshot"
MAX_LINES = 600
MAX_TRAIN_FUNCTION_LINES = 80


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
        "pkg/f.py": "from .sub import e\nfrom .sub.e import (one,\n    two)\n",
        "pkg/sub/__init__.py": "from .. import f\n",
        "pkg/sub/e.py": "",
    })
    edges = import_edges(package)
    assert edges["pkg.f"] == {"pkg.sub.e": ["pkg/f.py:1", "pkg/f.py:2"]}
    assert edges["pkg.b"] == {"pkg.a": ["pkg/b.py:1", "pkg/b.py:2"]}
    assert "os" not in edges["pkg.a"]  # modules outside the package are left out
    assert import_cycles(package) == [["pkg", "pkg.c", "pkg.d", "pkg"], ["pkg.a", "pkg.b", "pkg.a"]]
    assert describe(["pkg.a", "pkg.b", "pkg.a"], edges).splitlines() == [
        "pkg.a -> pkg.b -> pkg.a",
        "    pkg.a -> pkg.b: pkg/a.py:4",
        "    pkg.b -> pkg.a: pkg/b.py:1, pkg/b.py:2",
    ]


def test_no_import_circle_under_fewshot() -> None:
    edges = import_edges(FEWSHOT)
    cycles = import_cycles(FEWSHOT)
    assert not cycles, "\n".join(describe(cycle, edges) for cycle in cycles)


def test_no_module_over_600_lines() -> None:
    long = {str(path.relative_to(FEWSHOT)): n for path in sorted(FEWSHOT.rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_function_of_the_training_loop_over_80_lines() -> None:
    long = {}
    for path in sorted((FEWSHOT / "train").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_TRAIN_FUNCTION_LINES:
                    long[f"{path.relative_to(FEWSHOT)}:{node.name}"] = lines
    assert not long, f"functions over {MAX_TRAIN_FUNCTION_LINES} lines: {long}"


def test_fewshot_generate_reexports_the_objects_of_their_homes() -> None:
    import fewshot.cli.parsing as parsing
    import fewshot.generate as generate
    import fewshot.image_output as image_output
    import fewshot.loading as loading
    import fewshot.synthesis as synthesis

    homes = (synthesis, image_output, loading, parsing)
    for name in generate.__all__:
        assert any(getattr(home, name, None) is getattr(generate, name) for home in homes), name
    # Every public function and class of the new homes is reachable under the old name too.
    for home in homes:
        defined = {name for name, value in vars(home).items() if not name.startswith("_")
                   and isinstance(value, type | FunctionType) and value.__module__ == home.__name__}
        assert defined <= set(generate.__all__), sorted(defined - set(generate.__all__))


def test_fewshot_imports_the_generation_api_from_its_homes() -> None:
    # fewshot.generate is for code outside the package (tests, benchmarks, users' scripts).
    importers = {module for module, targets in import_edges(FEWSHOT).items() if "fewshot.generate" in targets}
    assert not importers, sorted(importers)
