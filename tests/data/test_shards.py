from dpr.data.formats import read_passages_tsv
from dpr.data.shards import shard_path, write_shards
from dpr.utils.io import atomic_write


def test_shards_split_contiguously_with_headers(tmp_path):
    p = tmp_path / "passages.tsv"
    rows = [(str(i), f"文本{i}", "") for i in range(10)]
    with atomic_write(p) as f:
        f.write("id\ttext\ttitle\n" + "".join("\t".join(r) + "\n" for r in rows))
    paths = write_shards(p, 4, len(rows))
    assert [x.name for x in paths] == [f"passages_shard{k}_of4.tsv" for k in range(4)]
    assert paths[2] == shard_path(p, 2, 4)
    parts = [list(read_passages_tsv(x)) for x in paths]
    assert [len(x) for x in parts] == [3, 3, 2, 2]
    assert sum(parts, []) == rows
    more = write_shards(p, 12, len(rows))  # more shards than passages: the tail shards hold only the header
    assert sum((list(read_passages_tsv(x)) for x in more), []) == rows
    assert more[-1].read_text() == "id\ttext\ttitle\n"
