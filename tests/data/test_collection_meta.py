
import pytest

from dpr.data.collection_meta import META_NAME, read_meta, sibling_ids_enabled, write_meta
from dpr.utils.io import InputError


def test_write_then_read_beside_a_file_or_a_directory(tmp_path):
    write_meta(tmp_path, {"id_scheme": "paragraph-k", "made_by": "test"})
    assert read_meta(tmp_path) == read_meta(tmp_path / "passages.tsv") == {"id_scheme": "paragraph-k", "made_by": "test"}
    assert read_meta(tmp_path / "sub" / "passages.tsv") is None
    with pytest.raises(ValueError, match="id_scheme"):
        write_meta(tmp_path, {"id_scheme": "hash-k"})


@pytest.mark.parametrize("scheme, flag, expected", [(None, False, False), (None, True, True),
                                                    ("paragraph-k", False, True), ("opaque", False, False),
                                                    ("opaque", True, True)])
def test_sibling_ids_enabled_by_flag_or_record(tmp_path, scheme, flag, expected):
    if scheme:
        write_meta(tmp_path, {"id_scheme": scheme})
    on, why = sibling_ids_enabled(flag, tmp_path / "passages.tsv")
    assert on is expected and (("--sibling_ids" in why) if flag or not scheme else (scheme in why))


@pytest.mark.parametrize("content", ['{"id_scheme": "hash-k"}', "[1]", "{not json"])
def test_bad_record_names_the_file(tmp_path, content):
    (tmp_path / META_NAME).write_text(content)
    with pytest.raises(InputError, match=META_NAME):
        sibling_ids_enabled(False, tmp_path / "passages.tsv")
