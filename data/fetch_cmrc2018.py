"""Find the CMRC2018 squad-style files (or download them when the network allows) and print their directory.

Search order: $CMRC2018_DIR, ../shared/data/cmrc2018 (beside the repo), data/cmrc2018. Failing all, the three files
are fetched from the public ymcui/cmrc2018 repository into data/cmrc2018/, each checked against its sha256.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpr.data.cmrc import cmrc_candidates  # noqa: E402
from dpr.utils.cli import fail, run_script  # noqa: E402
from dpr.utils.io import atomic_write, file_sha256  # noqa: E402

FILES = {
    "cmrc2018_train.json": "5497aa2f81908e31d6b0e27d99b1f90ab63a8f58fa92fffe5d17cf62eba0c212",
    "cmrc2018_dev.json": "e9ff74231f05c230c6fa88b84441ee334d97234cbb610991cd94b82db00c7f1f",
    "cmrc2018_trial.json": "f3fae95b57da8e03afb2b57467dd221417060ef4d82db13bf22fc88589f3a6f3",
}
URL = "https://raw.githubusercontent.com/ymcui/cmrc2018/master/squad-style-data/{name}"


def candidates() -> list[Path]:
    return cmrc_candidates(ROOT)


def find_local() -> Path | None:
    for d in candidates():
        if all((d / name).is_file() for name in FILES):
            return d
    return None


def download(dest: Path, timeout: float = 30.0) -> Path:
    for name, digest in FILES.items():
        target = dest / name
        if target.is_file() and file_sha256(target) == digest:
            continue
        with urllib.request.urlopen(URL.format(name=name), timeout=timeout) as r:
            data = r.read()
        got = hashlib.sha256(data).hexdigest()
        if got != digest:
            raise RuntimeError(f"{name}: sha256 {got} does not match the expected {digest}")
        with atomic_write(target, "wb") as f:
            f.write(data)
    return dest


def locate(allow_download: bool = True) -> Path:
    """The CMRC2018 directory; when it cannot be had, one `error:` line says what to put where (`fail`)."""
    found = find_local()
    if found is not None:
        return found
    places = ", ".join(str(d) for d in candidates())
    if allow_download:
        try:
            return download(ROOT / "data" / "cmrc2018")
        except (OSError, RuntimeError) as e:
            reason = f"download failed ({e})"
    else:
        reason = "download disabled"
    fail(f"CMRC2018 not found in any of: {places}; {reason}. Place {', '.join(FILES)} (from the ymcui/cmrc2018 "
         "repository, folder squad-style-data/) in one of them, or set CMRC2018_DIR.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no_download", action="store_true", help="Only look locally.")
    allow_download = not parser.parse_args(argv).no_download
    return run_script(lambda: print(locate(allow_download)))


if __name__ == "__main__":
    sys.exit(main())
