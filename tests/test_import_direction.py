"""docs/architecture.md §2, enforced by scanning imports:

- `models` imports neither `service` nor `training` nor web/metrics libraries; `training` never imports
  `service`; `service` never imports `training`; nothing outside `tests/` imports `tests`;
- a task folder (`models/<task>/`, `training/<task>/`) imports the shared packages (`models.core`,
  `training.core`) and its own task's folders, never another task's;
- the shared packages import no task folder at all.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("sentiment", "translation", "generation")
PACKAGES = ("models", "training", "service", "bench")
FORBIDDEN_ROOTS = {
    "models": {"service", "training", "tests", "litestar", "prometheus_client", "uvicorn", "pydantic_settings"},
    "training": {"service", "tests", "litestar", "uvicorn", "prometheus_client"},
    "service": {"training", "tests"},
    "bench": {"tests"},
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name `path` imports (`import a.b` → a.b; `from a.b import c` → a.b and a.b.c)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def task_of(module: str) -> str | None:
    """'models.translation.mc' → 'translation'; None for shared or top-level modules."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] in ("models", "training") and parts[1] in TASKS:
        return parts[1]
    return None


def violations(path: Path, root: Path = ROOT) -> list[str]:
    relative = path.relative_to(root)
    package = relative.parts[0]
    own = task_of(".".join(relative.with_suffix("").parts))
    shared = len(relative.parts) > 2 and relative.parts[1] == "core"
    found = []
    for name in sorted(imported_modules(path)):
        if name.split(".")[0] in FORBIDDEN_ROOTS.get(package, ()):
            found.append(f"{name} (package {package} may not import it)")
            continue
        other = task_of(name)
        if other is None:
            continue
        if shared:
            found.append(f"{name} (a shared core module imports a task folder)")
        elif own is not None and other != own:
            found.append(f"{name} (task {own} imports task {other})")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_respects_import_direction(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    offenders = {str(f.relative_to(ROOT)): v for f in files if (v := violations(f))}
    assert offenders == {}


def test_every_task_has_the_same_layout() -> None:
    for package in ("models", "training"):
        assert (ROOT / package / "core" / "__init__.py").is_file()
        layouts = {task: {p.name for p in (ROOT / package / task).glob("*.py")} for task in TASKS}
        common = set.intersection(*layouts.values())
        expected = {"models": {"model.py", "mc.py", "predictor.py"},
                    "training": {"job.py", "data.py", "evaluation.py", "__main__.py"}}[package]
        assert expected <= common, f"{package}: each task folder needs {sorted(expected)}; got {layouts}"


@pytest.mark.parametrize(
    ("relative", "source", "expected"),
    [
        ("models/core/x.py", "from models.sentiment.mc import forward_logits\n", "shared core module"),
        ("models/translation/x.py", "import models.generation.decode\n", "task translation imports task generation"),
        ("training/generation/x.py", "from training.translation import probes\n",
         "task generation imports task translation"),
        ("training/x.py", "from service.app import create_app\n", "package training may not import"),
        ("bench/x.py", "from tests.factories import make_tiny_sentiment_artifact\n", "package bench may not import"),
        ("service/x.py", "from training.core import loop\n", "package service may not import"),
    ],
)
def test_the_checker_sees_violations(tmp_path: Path, relative: str, source: str, expected: str) -> None:
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    assert any(expected in v for v in violations(path, tmp_path)), violations(path, tmp_path)


def test_own_task_and_core_imports_are_allowed(tmp_path: Path) -> None:
    path = tmp_path / "training" / "sentiment" / "x.py"
    path.parent.mkdir(parents=True)
    path.write_text("from models.core.artifacts import Manifest\nfrom models.sentiment.mc import num_layers\n"
                    "from training.core import reports\nfrom training.sentiment.data import load_imdb\n")
    assert violations(path, tmp_path) == []
