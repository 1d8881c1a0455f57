import json

import pytest

from dpr.data.formats import read_passages_tsv
from dpr.utils.io import InputError
from tests.data_scripts import load_script

mod = load_script("subset_passages")


def _write(tmp_path, scheme="paragraph-k"):
    if scheme:
        (tmp_path / "collection_meta.json").write_text(json.dumps({"id_scheme": scheme}))
    ctx = tmp_path / "passages.tsv"
    ctx.write_text("id\ttext\ttitle\naaa-0\t甲一\t\naaa-1\t甲二\t\nbbb-0\t乙一\t\nccc-0\t丙一\t\nccc-1\t丙二\t\n",
                   encoding="utf-8")
    qa = tmp_path / "test.json"
    qa.write_text(json.dumps({"question_id": "q1", "question": "问", "answer_paragraphs":
                              [{"paragraph_id": "ccc-1", "paragraph_text": "丙二"}]}, ensure_ascii=False) + "\n",
                  encoding="utf-8")
    return ctx, qa


def test_keeps_every_passage_of_the_gold_paragraphs(tmp_path):
    ctx, qa = _write(tmp_path)
    out = tmp_path / "held.tsv"
    assert mod.subset(str(ctx), [str(qa)], str(out)) == 2
    assert [pid for pid, _, _ in read_passages_tsv(out)] == ["ccc-0", "ccc-1"]


def test_no_match_leaves_no_file(tmp_path):
    ctx, qa = _write(tmp_path)
    qa.write_text(json.dumps({"question_id": "q1", "question": "问", "answer_paragraphs":
                              [{"paragraph_id": "zzz-0", "paragraph_text": "无"}]}) + "\n", encoding="utf-8")
    out = tmp_path / "held.tsv"
    with pytest.raises(InputError, match="passages.tsv: none of its passages"):
        mod.subset(str(ctx), [str(qa)], str(out))
    assert not out.exists() and not list(tmp_path.glob(".held*"))


@pytest.mark.parametrize("scheme", [None, "opaque"])
def test_without_the_record_it_needs_the_flag(tmp_path, scheme, capsys):
    ctx, qa = _write(tmp_path, scheme)
    out = tmp_path / "held.tsv"
    with pytest.raises(InputError, match=r"passages.tsv: .*<paragraph>-<k>.*--sibling_ids"):
        mod.subset(str(ctx), [str(qa)], str(out))
    assert not out.exists()
    mod.main(["--ctx_file", str(ctx), "--qa_file", str(qa), "--out_file", str(out), "--sibling_ids"])
    assert [pid for pid, _, _ in read_passages_tsv(out)] == ["ccc-0", "ccc-1"]
    assert "2 passages" in capsys.readouterr().out


def test_the_script_names_the_missing_record(tmp_path):
    ctx, qa = _write(tmp_path, None)
    with pytest.raises(SystemExit, match="--sibling_ids"):
        mod.main(["--ctx_file", str(ctx), "--qa_file", str(qa), "--out_file", str(tmp_path / "held.tsv")])
