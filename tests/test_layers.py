"""The package's layering, beyond what import-linter checks (CI runs `lint-imports` for the
layers, "nothing imports cli" and "only viz imports matplotlib"): no module imports another
module's private names, or a private module."""

import ast
import os

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fastloss")


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def private_imports(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastloss"):
            parts = node.module.split(".")
            found += [f"{node.module} (private module)" for p in parts if is_private(p)]
            found += [f"{node.module}.{a.name}" for a in node.names if is_private(a.name)]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "fastloss" and any(is_private(p) for p in parts):
                    found.append(alias.name)
    return found


def test_no_private_names_cross_modules():
    found = {
        os.path.relpath(path, PACKAGE): bad for path in modules() if (bad := private_imports(path))
    }
    assert found == {}


def test_no_module_under_fastloss_imports_the_cli():
    for path in modules():
        if os.sep + "cli" + os.sep in path:
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("fastloss.cli"), path
            elif isinstance(node, ast.Import):
                assert all(not a.name.startswith("fastloss.cli") for a in node.names), path
