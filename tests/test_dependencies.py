"""The packages depend one way: features <- models <- {training, serving, monitoring}.

training, serving and monitoring never import each other; they meet through MLflow aliases,
Feast feature services and Iceberg tables. feature_repo holds Feast declarations and may use
features only.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "models", "training", "serving", "monitoring", "feature_repo")
ALLOWED = {
    "features": set(),
    "feature_repo": {"features"},
    "models": {"features"},
    "training": {"features", "models"},
    "serving": {"features", "models"},
    "monitoring": {"features", "models"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_it_may(package):
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        wrong = imported_packages(path) - ALLOWED[package] - {package}
        if wrong:
            bad[str(path.relative_to(ROOT))] = sorted(wrong)
    assert not bad, f"{package} may import only {sorted(ALLOWED[package])}: {bad}"


def test_the_checker_sees_a_forbidden_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import serving.api\nfrom training import pipeline\nfrom . import local\n")
    assert imported_packages(f) == {"serving", "training"}


def test_pyiceberg_is_imported_only_by_the_lake_adapter():
    users = [str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
             if "pyiceberg" in {n.split(".")[0] for n in _all_imports(p)}]
    assert users == ["features/lake.py"]


def _all_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_feast_is_imported_only_by_its_adapter_and_the_declarations():
    users = sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                   if "feast" in {n.split(".")[0] for n in _all_imports(p)})
    assert users == ["feature_repo/market_features.py", "features/featurestore.py"]


def test_mlflow_is_imported_only_by_its_adapter():
    users = sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                   if "mlflow" in {n.split(".")[0] for n in _all_imports(p)})
    assert users == ["models/mlflow_model.py"]


@pytest.mark.parametrize("sdk, adapter", [
    ("bentoml", "serving/service.py"),
    ("evidently", "monitoring/evidently_adapter.py"),
    ("ray", "serving/batch.py"),
])
def test_each_serving_and_monitoring_sdk_has_one_adapter(sdk, adapter):
    users = sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
                   if sdk in {n.split(".")[0] for n in _all_imports(p)})
    assert users == [adapter]
