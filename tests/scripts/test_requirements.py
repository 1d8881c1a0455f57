"""GPU users install requirements-gpu.txt: faiss-gpu and never faiss-cpu (both install the module `faiss`)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def requirements(name: str) -> set[str]:
    """Package names a requirements file installs, following `-r` includes."""
    out: set[str] = set()
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            out |= requirements(line[3:].strip())
        elif line:
            out.add(line.split(">")[0].split("=")[0].split("<")[0].strip().lower())
    return out


def test_gpu_requirements_install_faiss_gpu_and_not_faiss_cpu():
    cpu, gpu = requirements("requirements.txt"), requirements("requirements-gpu.txt")
    assert "faiss-cpu" in cpu and not any(p.startswith("faiss-gpu") for p in cpu)
    assert "faiss-gpu-cu12" in gpu and "faiss-cpu" not in gpu
    assert cpu - {"faiss-cpu"} == gpu - {"faiss-gpu-cu12"}  # everything else the same
