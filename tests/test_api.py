"""The public API: what `import fastloss` offers, what it does not import, and the README's
Python examples using nothing else."""

import ast
import os
import re
import subprocess
import sys

import fastloss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLIC = [
    "evaluate",
    "Surface",
    "Subspace",
    "Plane",
    "Line",
    "Grid",
    "batch",
    "Bezier",
    "PolyChain",
    "fit_curve",
    "evaluate_curve",
    "curve_plane",
    "CurveResult",
    "load_checkpoint",
    "save_checkpoint",
    "build_model",
    "load_data",
]


def test_the_public_names_are_there():
    missing = [name for name in PUBLIC if name not in fastloss.__all__]
    assert missing == []
    for name in fastloss.__all__:
        assert getattr(fastloss, name) is not None, name
    assert fastloss.__version__ == fastloss.version.__version__


def test_import_fastloss_imports_neither_matplotlib_nor_the_cli():
    code = (
        "import sys, fastloss\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'"
        " or m.startswith('fastloss.cli') or m.startswith('fastloss.viz'))\n"
        "print(bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_readme_python_examples_use_only_public_names():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        blocks = python_blocks(f.read())
    assert len(blocks) >= 2
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastloss"):
                assert node.module == "fastloss", f"README imports from {node.module}"
                names = [a.name for a in node.names]
                assert set(names) <= set(fastloss.__all__), names
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] != "fastloss" or alias.name == "fastloss"
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "fastloss"
            ):
                assert node.attr in fastloss.__all__, f"README uses fastloss.{node.attr}"
