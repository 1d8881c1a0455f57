import hashlib
import io
import urllib.request

import pytest

from tests.data_scripts import load_script

fetch = load_script("fetch_cmrc2018")


def test_env_dir_wins(tmp_path, monkeypatch):
    for name in fetch.FILES:
        (tmp_path / name).write_text("{}")
    monkeypatch.setenv("CMRC2018_DIR", str(tmp_path))
    assert fetch.locate(allow_download=False) == tmp_path


def test_offline_failure_says_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "candidates", lambda: [tmp_path / "nowhere"])
    monkeypatch.setattr(fetch, "ROOT", tmp_path)

    def offline(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(SystemExit) as e:
        fetch.locate()
    msg = str(e.value)
    assert "no network" in msg and "cmrc2018_train.json" in msg and "squad-style-data" in msg
    assert not (tmp_path / "data" / "cmrc2018" / "cmrc2018_train.json").exists()


def test_download_checks_sha256(tmp_path, monkeypatch):
    payloads = {name: f"payload {name}".encode() for name in fetch.FILES}
    monkeypatch.setattr(fetch, "FILES", {n: hashlib.sha256(p).hexdigest() for n, p in payloads.items()})
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payloads[url.rsplit("/", 1)[1]]))
    assert fetch.download(tmp_path) == tmp_path
    assert all((tmp_path / n).read_bytes() == p for n, p in payloads.items())

    payloads["cmrc2018_dev.json"] = b"tampered"
    (tmp_path / "cmrc2018_dev.json").unlink()
    with pytest.raises(RuntimeError, match="cmrc2018_dev.json: sha256"):
        fetch.download(tmp_path)
    assert not (tmp_path / "cmrc2018_dev.json").exists()
