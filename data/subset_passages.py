"""Keep the passages of the paragraphs that some questions' gold passages come from (ids `<paragraph>-<k>`).

The demo uses it to search the held-out paragraphs only (CMRC2018 dev + trial), which keeps CPU encoding short:
`python data/subset_passages.py --ctx_file passages.tsv --qa_file dev.json test.json --out_file heldout.tsv`.
It needs ids shaped `<paragraph>-<k>`: said by the collection_meta.json beside --ctx_file (the CMRC builder writes
one, preprocessing copies it beside passages.tsv) or by --sibling_ids.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpr.data.collection_meta import sibling_ids_enabled  # noqa: E402
from dpr.data.formats import PassagesWriter, read_passages_tsv, read_questions  # noqa: E402
from dpr.data.siblings import paragraph_of  # noqa: E402
from dpr.utils.cli import fail, run_script  # noqa: E402
from dpr.utils.io import InputError, atomic_write  # noqa: E402


def subset(ctx_file: str, qa_files: list[str], out_file: str, sibling_ids: bool = False) -> int:
    """Write the passages whose paragraph holds a gold passage of `qa_files`; returns how many."""
    enabled, why = sibling_ids_enabled(sibling_ids, ctx_file)
    if not enabled:
        raise InputError(ctx_file, f"selecting by paragraph needs ids shaped <paragraph>-<k> and nothing says these "
                                   f"are ({why}); pass --sibling_ids if they are")
    families = set()
    for qa in qa_files:
        for _, _, gold in read_questions(qa):
            families.update(f for f in map(paragraph_of, gold or []) if f)
    if not families:
        raise InputError(qa_files[0], "no gold passage ids shaped <paragraph>-<k>: nothing to select by")
    with atomic_write(out_file) as f:
        out = PassagesWriter(f)
        for pid, text, title in read_passages_tsv(ctx_file):
            if paragraph_of(pid) in families:
                out.write(pid, text, title)
        if not out.count:  # raised inside: the temp file is removed, nothing is left behind
            raise InputError(ctx_file, f"none of its passages belongs to the {len(families)} paragraphs of {qa_files}")
    return out.count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ctx_file", required=True, help="passages.tsv")
    parser.add_argument("--qa_file", required=True, nargs="+", help="Labelled question files (release JSON or DPR JSON).")
    parser.add_argument("--out_file", required=True)
    parser.add_argument("--sibling_ids", action="store_true",
                   help="The ids follow `<paragraph>-<k>` (needed when no collection_meta.json beside --ctx_file "
                        "says id_scheme paragraph-k).")
    a = parser.parse_args(argv)
    try:
        n = subset(a.ctx_file, a.qa_file, a.out_file, a.sibling_ids)
    except InputError as e:
        fail(str(e))
    print(f"{n} passages -> {a.out_file}")


if __name__ == "__main__":
    sys.exit(run_script(main))
