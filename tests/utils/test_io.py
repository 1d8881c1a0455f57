import os

import pytest

from dpr.utils.io import InputError, atomic_path, atomic_write, check_writable_dir, iter_jsonl, iter_lines, read_json


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_write(target) as f:
        f.write("new")
        assert target.read_text() == "old"  # not visible until the rename
    assert target.read_text() == "new"


def test_atomic_path_for_writers_by_name(tmp_path):
    import numpy as np

    target = tmp_path / "emb.npy"
    with atomic_path(target) as tmp:
        np.save(tmp, np.arange(3))
    assert np.load(target).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["emb.npy"]


def test_jsonl_error_names_file_and_line(tmp_path):
    p = tmp_path / "train.json"
    p.write_text('{"a": 1}\n\n{"a": 2\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"train\.json:3: malformed JSON line"):
        list(iter_jsonl(p))
    bad: list[int] = []
    assert [n for n, _ in iter_jsonl(p, skip_bad_lines=True, bad=bad)] == [1]
    assert bad == [3]


def test_non_utf8_line_is_named(tmp_path):
    p = tmp_path / "p.tsv"
    p.write_bytes("id\ttext\n1\t好\n".encode() + b"2\t\xff\xfe\n")
    with pytest.raises(InputError, match=r"p\.tsv:3: not valid UTF-8"):
        list(iter_lines(p))


def test_read_json_reports_position(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{\n "a": 1,\n}', encoding="utf-8")
    with pytest.raises(InputError, match=r"x\.json:3: malformed JSON"):
        read_json(p)
    with pytest.raises(InputError, match="file not found"):
        read_json(tmp_path / "missing.json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_unwritable_dir_fails_early(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    with pytest.raises(InputError, match="not writable"):
        check_writable_dir(d)


def test_unwritable_dir_fails_early_as_root_too(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="not writable"):
        check_writable_dir(f / "sub")  # a path under a regular file can never be created



def test_published_files_have_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt") as f:
            f.write("x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o644


def test_remove_stale_temps_takes_only_the_temps_of_that_name(tmp_path):
    from dpr.utils.io import remove_stale_temps

    target = tmp_path / "emb_shard1.npy"
    stale = [tmp_path / ".emb_shard1.npy.ab12.tmp.npy", tmp_path / ".emb_shard1.npy.cd34.tmp"]
    for p in stale:
        p.write_text("half")
    (tmp_path / ".emb_shard1.npy.ef56.tmp.dir").mkdir()  # a temp directory (checkpoint towers)
    (tmp_path / ".emb_shard1.npy.ef56.tmp.dir" / "f").write_text("x")
    keep = [target, tmp_path / ".emb_shard10.npy.ab12.tmp.npy", tmp_path / "emb_shard1.npy.tmp", tmp_path / ".other"]
    for p in keep:
        p.write_text("keep")
    assert sorted(remove_stale_temps(target)) == sorted(stale + [tmp_path / ".emb_shard1.npy.ef56.tmp.dir"])
    assert sorted(tmp_path.iterdir()) == sorted(keep)


def test_atomic_dir_publishes_replaces_and_cleans_up(tmp_path):
    from dpr.utils.io import atomic_dir

    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("1")
        assert not target.exists()  # nothing visible before the block ends
    assert (target / "a.txt").read_text() == "1"
    assert oct(target.stat().st_mode & 0o777) == oct(0o777 & ~_current_umask())
    with atomic_dir(target) as d:  # a second publish replaces the first whole
        (d / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "c.txt").write_text("3")
            raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # the old one stands
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp dir left behind


def test_atomic_dir_keeps_an_existing_copy_that_is_already_what_was_built(tmp_path):
    from dpr.utils.io import atomic_dir

    target = tmp_path / "model"
    target.mkdir()
    (target / "version").write_text("2")
    with atomic_dir(target, keep_existing=lambda t: (t / "version").read_text() == "2") as d:
        (d / "version").write_text("2-new")
    assert (target / "version").read_text() == "2"
    with atomic_dir(target, keep_existing=lambda t: (t / "version").read_text() == "3") as d:
        (d / "version").write_text("3")
    assert (target / "version").read_text() == "3"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def _current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_publish_then_mark_removes_the_old_marker_first_and_writes_the_new_one_last(tmp_path):
    from dpr.utils.io import publish_then_mark, read_json

    marker, data = tmp_path / "meta.json", tmp_path / "data.txt"
    marker.write_text('{"old": true}')
    with pytest.raises(RuntimeError):
        with publish_then_mark(marker, {"new": True}):
            assert not marker.exists()  # the old marker never vouches for data being replaced
            with atomic_write(data) as f:
                f.write("half")
            raise RuntimeError("killed before the data is complete")
    assert not marker.exists()
    with publish_then_mark(marker, {"new": True}) as path:
        with atomic_write(data) as f:
            f.write("whole")
        assert path == marker and not marker.exists()
    assert read_json(marker) == {"new": True}
    with publish_then_mark(tmp_path / "state.bin", lambda f: f.write(b"\x00state"), "wb"):
        pass
    assert (tmp_path / "state.bin").read_bytes() == b"\x00state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt", "meta.json", "state.bin"]  # no temp files
