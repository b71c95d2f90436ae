"""training/ never imports service/ (docs/architecture.md §2): the artifact directory is the only contract."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "training"


def test_training_never_imports_service() -> None:
    offenders = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in {"service", "litestar", "prometheus_client"}]
    assert not offenders
    assert len(list(ROOT.rglob("*.py"))) >= 10
