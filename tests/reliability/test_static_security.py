"""Static security checks of the source: bandit finds nothing of medium or high severity (each `# nosec`
is explained as a false positive), and nothing can unpickle: no pickle-family imports, every `torch.load`
passes `weights_only=True`, no `allow_pickle=True`, no `trust_remote_code=True`, no `use_safetensors=False`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "training", "service")
SCANNED = (*PACKAGES, "bench", "tests")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def python_files(*roots: str) -> list[Path]:
    return sorted(p for root in roots for p in (ROOT / root).rglob("*.py") if "__pycache__" not in p.parts)


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loads(tree: ast.AST) -> list[str]:
    """Every construct in `tree` that could load pickled data or remote code (see module docstring)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found += [f"line {node.lineno}: imports {n}" for n in names if n.split(".")[0] in PICKLE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        if func.endswith("torch.load") and not is_true(keyword(node, "weights_only")):
            found.append(f"line {node.lineno}: {func} without weights_only=True")
        if is_true(keyword(node, "allow_pickle")) or is_true(keyword(node, "trust_remote_code")):
            found.append(f"line {node.lineno}: {func} allows pickle or remote code")
        flag = keyword(node, "use_safetensors")
        if isinstance(flag, ast.Constant) and flag.value is False:
            found.append(f"line {node.lineno}: {func} with use_safetensors=False")
        if func.endswith(("read_pickle", "to_pickle")):
            found.append(f"line {node.lineno}: {func}")
    return found


def test_the_unsafe_load_scan_catches_what_it_looks_for() -> None:
    bad = ("import pickle\nfrom joblib import load\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "np.load(p, allow_pickle=True)\nAutoModel.from_pretrained(p, trust_remote_code=True)\n"
           "M.from_pretrained(p, use_safetensors=False)\ndf = pd.read_pickle(p)\n")
    assert len(unsafe_loads(ast.parse(bad))) == 8
    assert unsafe_loads(ast.parse("torch.load(p, map_location='cpu', weights_only=True)\n")) == []


def test_nothing_in_the_source_can_unpickle() -> None:
    problems = {str(path.relative_to(ROOT)): found for path in python_files(*SCANNED)
                if (found := unsafe_loads(ast.parse(path.read_text(encoding="utf-8"))))}
    assert problems == {}


def test_bandit_finds_no_medium_or_high_severity_issue() -> None:
    run = subprocess.run([sys.executable, "-m", "bandit", "-r", *PACKAGES, "-f", "json", "-q",
                          "--severity-level", "medium"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    report = json.loads(run.stdout)
    issues = [f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}" for r in report["results"]]
    assert issues == []
    assert report["errors"] == []
    assert run.returncode == 0, run.stderr


def test_every_nosec_is_explained() -> None:
    unexplained = []
    for path in python_files(*PACKAGES):
        lines = path.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if "# nosec" in line:
                context = " ".join(lines[max(0, index - 3):index + 1]).lower()
                if "false positive" not in context and " - " not in line.split("# nosec", 1)[1]:
                    unexplained.append(f"{path.relative_to(ROOT)}:{index + 1}")
    assert unexplained == []
