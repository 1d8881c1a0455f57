"""Build the CMRC2018 mini retrieval corpus in DuReader-retrieval's release JSON layout.

Every CMRC2018 paragraph is cut at sentence ends (。！？!?) into passages of at most --max_chars characters, with
ids `<md5 of the paragraph>-<k>`; a passage is relevant to a question when it overlaps the question's answer span.
Writes train.json (CMRC train), dev.json (dev), test.json (trial, labelled like dev), passage_collection.json
(every passage of every split) and collection_meta.json (id_scheme paragraph-k: passages sharing `<md5>` are
siblings, never each other's hard negatives; preprocessing copies it beside passages.tsv), then preprocess with:
  python data/preprocess_dureader.py --input_dir OUTPUT_DIR --output_dir OUTPUT_DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpr.data.cmrc import build, default_cmrc_dir  # noqa: E402
from dpr.options import positive_int, setup_logging  # noqa: E402
from dpr.utils.cli import fail, run_script  # noqa: E402
from dpr.utils.io import InputError  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cmrc_dir", type=Path, default=default_cmrc_dir(ROOT),
                   help="Folder with cmrc2018_{train,dev,trial}.json. Default: $CMRC2018_DIR, else "
                        "../shared/data/cmrc2018 beside the repo, else data/cmrc2018 (first that exists).")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "data" / "cmrc2018_retrieval",
                   help="Default: data/cmrc2018_retrieval")
    parser.add_argument("--max_chars", type=positive_int, default=200, help="Longest passage, in characters.")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        report = build(args.cmrc_dir, args.output_dir, args.max_chars)
    except InputError as e:
        fail(str(e))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    sys.exit(run_script(main))
