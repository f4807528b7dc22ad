"""The import graph of the repository follows its layers (run this file to print the graph):

    models (modeling_diht, modeling_cosmo)  <-  data (image_text_data)  <-  curation | evaluation | trainers
        <-  hub_cards  <-  examples, benchmarks            (and tests above everything; nothing imports tests)

A module imports only its own package and packages of lower layers; the three middle packages do not import one
another; the models' remote-code files import only the standard library, torch, transformers and their siblings;
no example imports an example, no benchmark imports a test, and nothing edits `sys.path`.

    python tests/shared/test_layering.py          # the graph: package -> the project packages it imports
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = {"modeling_diht": 0, "modeling_cosmo": 0, "image_text_data": 1, "curation": 2, "evaluation": 2,
          "trainers": 2, "hub_cards": 3, "examples": 4, "benchmarks": 4, "tests": 5}
REMOTE_CODE_IMPORTS = {"torch", "transformers"}


def python_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """`(absolute module name, line)` of every import in a file (relative imports resolved to their package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((".".join([*base, *([node.module] if node.module else [])]), node.lineno))
            else:
                found.append((node.module, node.lineno))
    return found


def sys_path_edits(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and node.attr in ("insert", "append", "extend") and isinstance(node.value, ast.Attribute)
            and node.value.attr == "path" and isinstance(node.value.value, ast.Name) and node.value.value.id == "sys"]


def graph() -> dict[str, set[str]]:
    """Top-level folder -> the project packages its files import."""
    edges: dict[str, set[str]] = defaultdict(set)
    for folder in LAYERS:
        for path in python_files(folder):
            for module, _ in imports_of(path):
                top = module.split(".")[0]
                if top in LAYERS and top != folder:
                    edges[folder].add(top)
    return edges


def _is_test_helper(module: str) -> bool:
    return module.split(".")[-1] == "helpers" and module.startswith("tests")


def violations() -> list[str]:
    found = []
    test_modules = {path.stem for path in python_files("tests")}
    for folder, layer in LAYERS.items():
        # Examples never import one another (benchmarks may share a module of their own, e.g. bench_model).
        scripts = {path.stem for path in python_files(folder)} if folder == "examples" else set()
        if folder != "tests":
            scripts |= test_modules
        for path in python_files(folder):
            where = path.relative_to(ROOT)
            found += [f"{where}:{line}: edits sys.path" for line in sys_path_edits(path)]
            for module, line in imports_of(path):
                top = module.split(".")[0]
                if top in scripts or top == "conftest" or top.startswith("test_"):
                    found.append(f"{where}:{line}: imports {module}, a script or test module")
                elif folder == "tests" and top == "tests" and not _is_test_helper(module):
                    found.append(f"{where}:{line}: imports {module}; tests share code through tests/helpers only")
                elif top not in LAYERS or top == folder or folder == "tests" and top != "examples":
                    continue
                elif top in ("examples", "tests"):
                    found.append(f"{where}:{line}: imports {module} (examples and tests are never imported)")
                elif LAYERS[top] >= layer:
                    found.append(f"{where}:{line}: imports {module}, which is not in a lower layer")
    return found


def remote_code_violations() -> list[str]:
    import modeling_cosmo
    import modeling_diht

    found = []
    for package, files in (("modeling_diht", modeling_diht.DIHT_REMOTE_CODE_FILES),
                           ("modeling_cosmo", modeling_cosmo.COSMO_REMOTE_CODE_FILES)):
        for name in files:
            path = ROOT / package / name
            for module, line in imports_of(path):
                top = module.split(".")[0]
                if top not in REMOTE_CODE_IMPORTS and top != package and top not in sys.stdlib_module_names:
                    found.append(f"{path.relative_to(ROOT)}:{line}: remote code imports {module}")
    return found


def test_every_import_points_down_the_layers():
    assert violations() == []


def test_the_remote_code_files_import_only_torch_transformers_and_their_siblings():
    assert remote_code_violations() == []


def test_the_checker_sees_a_forbidden_import(tmp_path, monkeypatch):
    # The rule can fail: a curation module importing the trainers is reported.
    bad = ROOT / "curation" / "_layering_probe.py"
    bad.write_text("import sys\nsys.path.insert(0, '.')\nfrom trainers import DiHTTrainer\n")
    try:
        problems = violations()
    finally:
        bad.unlink()
    assert "curation/_layering_probe.py:2: edits sys.path" in problems
    assert "curation/_layering_probe.py:3: imports trainers, which is not in a lower layer" in problems


if __name__ == "__main__":
    for folder in sorted(LAYERS, key=LAYERS.get):
        print(f"{folder:16} (layer {LAYERS[folder]}) imports {sorted(graph().get(folder, ())) or '-'}")
    problems = violations() + remote_code_violations()
    print("\n".join(problems) if problems else "no layering violations")
