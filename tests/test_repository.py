"""Static checks of what neither conda nor Binder can run here: the files parse and agree with pyproject."""

import os
import re
import subprocess
import sys

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import pytest
import yaml
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

#: pyproject (PyPI) name -> conda-forge names that provide it
CONDA_NAMES = {"torch": {"pytorch", "pytorch-cpu", "pytorch-gpu"}}
#: extras that conda users get as separate packages
EXTRA_PACKAGES = {("gymnasium", "mujoco"): "mujoco"}


def project_requirements():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(r) for r in data["project"]["dependencies"]]


def conda_specs(path):
    env = yaml.safe_load(path.read_text())
    assert "conda-forge" in env.get("channels", []), f"{path.name} should use conda-forge"
    specs = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", dep)
        name, spec = m.group(1).lower(), m.group(2).strip()
        if spec.startswith("=") and not spec.startswith("=="):
            spec = "==" + spec[1:] + (".*" if spec.count(".") < 2 and not spec.endswith("*") else "")
        specs[name] = SpecifierSet(spec.replace(" ", "")) if spec else SpecifierSet()
    return specs


def lower_bound(spec: SpecifierSet):
    bounds = [Version(s.version.rstrip(".*")) for s in spec if s.operator in (">=", "==", "~=", ">")]
    return max(bounds) if bounds else None


@pytest.mark.parametrize("envfile", ["environment.yml", "binder/environment.yml"])
def test_conda_environment_matches_pyproject(envfile):
    specs = conda_specs(ROOT / envfile)
    py = specs.get("python")
    assert py is not None and lower_bound(py) >= Version("3.10"), f"{envfile}: python must be >= 3.10"
    for req in project_requirements():
        names = CONDA_NAMES.get(req.name, {req.name.lower()})
        present = names & specs.keys()
        assert present, f"{envfile} lacks {req.name} (as any of {sorted(names)})"
        spec = specs[present.pop()]
        lb = lower_bound(spec)
        assert lb is not None, f"{envfile}: give {req.name} a lower bound like pyproject's {req.specifier}"
        assert req.specifier.contains(lb, prereleases=True), (
            f"{envfile}: {req.name} {spec} allows versions pyproject.toml excludes ({req.specifier})"
        )
        for extra in req.extras:
            pkg = EXTRA_PACKAGES.get((req.name, extra))
            if pkg:
                assert pkg in specs, f"{envfile}: {req.name}[{extra}] needs {pkg} as a conda package"


def test_binder_is_complete_on_its_own():
    binder = ROOT / "binder"
    env = yaml.safe_load((binder / "environment.yml").read_text())
    names = {re.split(r"[<>=\s]", d)[0] for d in env["dependencies"] if isinstance(d, str)}
    assert "pytorch-cpu" in names, "Binder must use a CPU build of torch to stay small"
    post = binder / "postBuild"
    assert os.access(post, os.X_OK), "binder/postBuild must be executable"
    assert "pip install" in post.read_text() and " -e ." in post.read_text(), "postBuild must install kfc_lite"


def test_ci_runs_make_test_and_nothing_else():
    lines = [
        l.strip() for l in (ROOT / ".ci/run").read_text().splitlines() if l.strip() and not l.strip().startswith("#")
    ]
    commands = [l for l in lines if not l.startswith(("set ", "cd "))]
    assert commands == ["make test"]


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert first_block, "README.md must open with a code block"
    assert text.index(first_block.group(0)) < 400, "the two commands must come first"
    cmds = [l for l in first_block.group(1).splitlines() if l.strip() and not l.startswith("#")]
    assert cmds == ["make lab", "make test"]


def test_cli_info_runs():
    out = subprocess.run([sys.executable, "-m", "kfc_lite", "info"], capture_output=True, text=True, check=True)
    assert "device: cpu" in out.stdout or "device: cuda" in out.stdout
    assert "dataset cache" in out.stdout
