"""DuReader-retrieval (release JSON or baseline TSV layout) -> DPR JSON train/dev files, passages.tsv and shards.

Memory grows with what is kept (questions, their positives, passage ids), not with the collection: the collection
is streamed into passages.tsv, texts of mined negatives are fetched in one more pass over that file.
"""
from __future__ import annotations

import glob
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpr.data.bm25 import default_workers
from dpr.data.bm25_mining import Bm25Miner
from dpr.data.cleaning import clean_text, is_empty
from dpr.data.collection_meta import PARAGRAPH_K, meta_path, read_meta, sibling_ids_enabled, write_meta
from dpr.data.exclusion import Exclusion, exclusion
from dpr.data.formats import (
    DPRJsonWriter,
    PassagesWriter,
    dpr_passage,
    read_passages_tsv,
    release_question,
    write_dpr_json,
)
from dpr.data.siblings import sibling_key
from dpr.utils.io import (
    InputError,
    atomic_write,
    check_writable_dir,
    iter_jsonl,
    iter_lines,
    read_json,
    remove_stale_temps,
    write_json,
)

logger = logging.getLogger(__name__)

RELEASE_FILES = ("train.json", "dev.json", "passage_collection.json")
BASELINE_FILES = ("train/dual.train.tsv", "dev/dev.json", "passage-collection/passage2id.map.json",
                  "passage-collection/part-00")
BASELINE_SUBDIR = "dureader-retrieval-baseline-dataset"
TRAIN_DIR = "retrieval_train_data"


@dataclass
class Options:
    input_dir: Path
    output_dir: Path
    layout: str = "auto"
    num_hard_negatives: int = 30
    dev_topk: Path | None = None
    skip_bad_lines: bool = False
    bm25: bool = True
    num_workers: int = field(default_factory=default_workers)  # jieba processes, BM25 search processes
    sibling_ids: bool = False  # ids are `<paragraph>-<k>` (also turned on by the input's collection_meta.json)


Ctx = tuple[str | None, str | None]  # (passage id, text): a passage as a question holds it, never changed in place


@dataclass
class Question:
    qid: str | None
    question: str
    answers: list[str]
    positives: list[Ctx]  # (pid, text | None); None = text to be fetched from the collection
    negatives: list[Ctx] = field(default_factory=list)
    mined: list[int] = field(default_factory=list)  # doc indices in passages.tsv

    def exclusion(self, sibling_ids: bool) -> Exclusion:
        """What may not be this question's negative (dpr.data.exclusion)."""
        return exclusion(((p, t, "") for p, t in self.positives), sibling_ids)

    def to_dpr(self, keep_qid: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"question": self.question, "answers": self.answers,
                                 "positive_ctxs": [dpr_passage(p, t) for p, t in self.positives if t],
                                 "negative_ctxs": [],
                                 "hard_negative_ctxs": [dpr_passage(p, t) for p, t in self.negatives]}
        if keep_qid and self.qid is not None:
            entry["question_id"] = self.qid
        return entry


class BadLines:
    """Raise on a bad line, or (with --skip_bad_lines) count it per file."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.counts: Counter = Counter()

    def handle(self, error: InputError) -> None:
        if not self.skip:
            raise error
        self.counts[error.path] += 1

    def jsonl(self, path: Path) -> Iterator[tuple[int, dict]]:
        bad: list[int] = []
        yield from iter_jsonl(path, self.skip, bad)
        if bad:
            self.counts[str(path)] += len(bad)


@dataclass
class Collection:
    """What is kept of the streamed collection: ids in passages.tsv order, sibling-group sizes, text-hash -> id."""

    pids: list[str] = field(default_factory=list)
    family_size: Counter = field(default_factory=Counter)  # by dpr.data.siblings.sibling_key (1 for plain ids)
    by_text_hash: dict[int, str] = field(default_factory=dict)


def detect_layout(input_dir: Path, layout: str = "auto") -> tuple[str, Path]:
    """(layout, root) of the data under input_dir (or its dureader-retrieval-baseline-dataset/ subfolder)."""
    wanted = {"release": RELEASE_FILES, "baseline": BASELINE_FILES}
    names = [layout] if layout != "auto" else ["release", "baseline"]
    roots = [input_dir, input_dir / BASELINE_SUBDIR]
    for root in roots:
        for name in names:
            if all((root / f).is_file() for f in wanted[name]):
                return name, root
    lines = []
    for name in names:
        missing = [f for f in wanted[name] if not (input_dir / f).is_file()]
        lines.append(f"the {name} layout needs {', '.join(wanted[name])} (missing: {', '.join(missing)})")
    raise InputError(input_dir, "no DuReader-retrieval data found: " + "; ".join(lines)
                     + ". For the CMRC2018 mini corpus run data/build_cmrc2018_retrieval.py and pass its --output_dir "
                     "as --input_dir.")


def read_release_questions(path: Path, bad: BadLines, stats: Counter, split: str) -> list[Question]:
    """Questions of a release-JSON file; labelled ones keep their answer paragraphs (text fetched later if absent)."""
    out: list[Question] = []
    for n, obj in bad.jsonl(path):
        try:
            qid, question = release_question(path, obj, n)
            if not question:
                raise InputError(path, "empty question", line=n)
            paras = obj.get("answer_paragraphs")
            if paras is not None and not (isinstance(paras, list) and all(
                    isinstance(p, dict) and "paragraph_id" in p for p in paras)):
                raise InputError(path, "answer_paragraphs must be a list of objects with a paragraph_id", line=n)
        except InputError as e:
            bad.handle(e)
            continue
        positives = []
        for p in paras or []:
            text = p.get("paragraph_text")
            positives.append((str(p["paragraph_id"]), None if is_empty(text) else clean_text(str(text))))
        if paras is not None and not positives:
            stats[f"{split}_questions_without_positives"] += 1
            continue
        answers = obj.get("answers") if isinstance(obj.get("answers"), list) else []
        out.append(Question(qid, question, [str(a) for a in answers], positives))
    stats[f"{split}_questions"] = len(out)
    return out


def _add_passage(writer: PassagesWriter, coll: Collection, seen: set[str], pid: str, raw: Any, stats: Counter,
                 want_hashes: set[int] | None = None) -> None:
    if is_empty(raw):
        stats["passages_dropped_empty"] += 1
        return
    text = clean_text(str(raw))
    if not text:
        stats["passages_dropped_empty"] += 1
        return
    if pid in seen:
        stats["passages_duplicate_id"] += 1
        return
    seen.add(pid)
    writer.write(pid, text)
    coll.pids.append(pid)
    coll.family_size[sibling_key(pid)] += 1
    if want_hashes is not None:
        h = hash(text)
        if h in want_hashes and h not in coll.by_text_hash:
            coll.by_text_hash[h] = pid


def stream_release_collection(path: Path, out_tsv: Path, bad: BadLines, stats: Counter) -> Collection:
    coll, seen = Collection(), set()
    with atomic_write(out_tsv) as f:
        writer = PassagesWriter(f)
        for n, obj in bad.jsonl(path):
            if "paragraph_id" not in obj or "paragraph_text" not in obj:
                bad.handle(InputError(path, "expected keys 'paragraph_id' and 'paragraph_text'", line=n))
                continue
            _add_passage(writer, coll, seen, str(obj["paragraph_id"]), obj["paragraph_text"], stats)
        _require_passages(path, coll, stats)  # inside the write: no passages.tsv is published
    return coll


def _require_passages(path: Path, coll: Collection, stats: Counter) -> None:
    if not coll.pids:
        raise InputError(path, f"no passages (empty or NaN texts dropped: {stats['passages_dropped_empty']})")


def baseline_parts(root: Path) -> list[Path]:
    return [Path(p) for p in sorted(glob.glob(str(root / "passage-collection" / "part-*")))]


def stream_baseline_collection(root: Path, out_tsv: Path, bad: BadLines, stats: Counter,
                               want_hashes: set[int]) -> Collection:
    """part-00.. lines `null, null, text, null`; passage2id.map.json maps the line index over all parts to its id."""
    id_map_path = root / "passage-collection" / "passage2id.map.json"
    id_map = read_json(id_map_path)
    if not isinstance(id_map, dict):
        raise InputError(id_map_path, "expected a JSON object {\"<line index>\": \"<paragraph_id>\"}")
    coll, seen, index = Collection(), set(), -1
    with atomic_write(out_tsv) as f:
        writer = PassagesWriter(f)
        for part in baseline_parts(root):
            for n, line in iter_lines(part):
                index += 1
                cols = line.split("\t")
                pid = id_map.get(str(index))
                if len(cols) != 4:
                    bad.handle(InputError(part, f"expected 4 tab-separated columns (null, null, passage, null), "
                                                f"got {len(cols)}", line=n))
                    continue
                if pid is None:
                    bad.handle(InputError(part, f"line index {index} (over all parts) has no id in {id_map_path}",
                                          line=n))
                    continue
                _add_passage(writer, coll, seen, str(pid), cols[2], stats, want_hashes)
        _require_passages(root / "passage-collection", coll, stats)
    return coll


def iter_baseline_train(path: Path, bad: BadLines) -> Iterator[tuple[str, str, str]]:
    """(query, positive, negative) per dual.train.tsv row `query, null, positive, null, negative, 0`, cleaned."""
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 6:
            bad.handle(InputError(path, f"expected 6 tab-separated columns (query, null, positive, null, negative, "
                                        f"label), got {len(cols)}", line=n))
            continue
        query, pos, neg = clean_text(cols[0]), clean_text(cols[2]), clean_text(cols[4])
        if not query or is_empty(pos):
            bad.handle(InputError(path, "empty query or positive passage", line=n))
            continue
        yield query, pos, ("" if is_empty(neg) else neg)


def group_baseline_train(path: Path, bad: BadLines, max_negatives: int,
                         stats: Counter | None = None) -> Iterator[Question]:
    """Consecutive rows of one query become one question: distinct positives, distinct negatives that are none of
    its positives (by text, checked once all its rows are read), capped."""
    current: Question | None = None

    def done(q: Question) -> Question:
        q.negatives = _allowed(q, q.negatives, False, stats, max_negatives)
        return q

    for query, pos, neg in iter_baseline_train(path, bad):
        if current is None or current.question != query:
            if current is not None:
                yield done(current)
            current = Question(None, query, [], [])
        if all(t != pos for _, t in current.positives):
            current.positives.append((None, pos))
        # a negative can only be dropped for equalling a positive: keep that many spares
        if neg and len(current.negatives) < max_negatives + len(current.positives) and \
                all(t != neg for _, t in current.negatives):
            current.negatives.append((None, neg))
    if current is not None:
        yield done(current)


def _allowed(q: Question, negatives: Iterable[Ctx], sibling_ids: bool, stats: Counter | None,
             limit: int | None = None) -> list[Ctx]:
    """The first `limit` (pid, text) negatives that q's Exclusion lets through; drops are counted by cause."""
    excl = q.exclusion(sibling_ids)
    kept: list[Ctx] = []
    for pid, text in negatives:
        if limit is not None and len(kept) == limit:
            break
        if not excl.rejects(pid, text):
            kept.append((pid, text))
        elif stats is not None:
            stats["negatives_dropped_positive_or_sibling_id" if excl.rejects_id(pid) else
                  "negatives_dropped_identical_text"] += 1
    return kept


def read_dev_topk(path: Path) -> dict[str, list[str]]:
    topk = read_json(path)
    if not isinstance(topk, dict) or not all(isinstance(v, list) for v in topk.values()):
        raise InputError(path, "expected the official ranked format {question_id: [paragraph_id, ...]}")
    return {str(q): [str(p) for p in v] for q, v in topk.items()}


def fetch_texts(passages_tsv: Path, doc_indices: set[int], pids: set[str]) -> tuple[dict[int, str], dict[str, str]]:
    """One pass over passages.tsv: texts by doc index and by id, for the requested ones only."""
    by_doc: dict[int, str] = {}
    by_pid: dict[str, str] = {}
    for i, (pid, text, _title) in enumerate(read_passages_tsv(passages_tsv)):
        if i in doc_indices:
            by_doc[i] = text
        if pid in pids:
            by_pid[pid] = text
    return by_doc, by_pid


def with_topk_negatives(q: Question, ranked: list[str], by_pid: dict[str, str], k: int, sibling_ids: bool,
                        stats: Counter) -> Question:
    """A copy of q whose hard negatives are the first k ranked passages its Exclusion lets through."""
    negs = _allowed(q, ((p, by_pid[p]) for p in ranked if p in by_pid), sibling_ids, stats, k)
    return Question(q.qid, q.question, q.answers, q.positives, negs)


class _Timer:
    """Stage timings of one run: `lap(name)` records the time since the previous lap."""

    def __init__(self) -> None:
        self.start = self.last = time.time()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.time()
        self.timings[name] = round(now - self.last, 2)
        self.last = now

    def report(self) -> dict[str, float]:
        return {**self.timings, "total_s": round(time.time() - self.start, 2)}


@dataclass
class _Run:
    """What every stage of one preprocessing run shares."""

    opts: Options
    layout: str
    root: Path
    out: Path
    sibling_ids: bool
    stats: Counter = field(default_factory=Counter)
    timer: _Timer = field(default_factory=_Timer)

    def __post_init__(self) -> None:
        self.bad = BadLines(self.opts.skip_bad_lines)
        self.passages_tsv = self.out / "passages.tsv"
        self.train_dir = self.out / TRAIN_DIR


def _read_release(r: _Run) -> tuple[dict[str, list[Question]], Collection]:
    """The release layout: train/dev/(labelled test) questions, then the collection streamed into passages.tsv."""
    splits = {"dev": read_release_questions(r.root / "dev.json", r.bad, r.stats, "dev"),
              "train": read_release_questions(r.root / "train.json", r.bad, r.stats, "train")}
    if (r.root / "test.json").is_file():
        test = read_release_questions(r.root / "test.json", r.bad, r.stats, "test")
        if test and all(q.positives for q in test):
            splits["test"] = test
        else:
            r.stats["test_unlabelled_not_converted"] = len(test)
    coll = stream_release_collection(r.root / "passage_collection.json", r.passages_tsv, r.bad, r.stats)
    r.stats["passages"] = len(coll.pids)
    r.timer.lap("collection_s")
    return splits, coll


def _read_baseline(r: _Run) -> tuple[dict[str, list[Question]], Collection]:
    """The baseline layout: dev questions, the collection (ids looked up for the train texts), then dual_train.json
    written straight from dual.train.tsv (its negatives are its own, so it needs no mining)."""
    train_tsv = r.root / "train" / "dual.train.tsv"
    splits = {"dev": read_release_questions(r.root / "dev/dev.json", r.bad, r.stats, "dev")}
    want: set[int] = set()  # hashes of the train texts whose ids the collection pass looks up
    first_pass = BadLines(r.opts.skip_bad_lines)  # raises before the long collection pass; counted in pass 2
    for group in group_baseline_train(train_tsv, first_pass, r.opts.num_hard_negatives):
        want.update(hash(t) for _, t in group.positives + group.negatives)
    coll = stream_baseline_collection(r.root, r.passages_tsv, r.bad, r.stats, want)
    r.stats["passages"] = len(coll.pids)
    r.timer.lap("collection_s")
    with DPRJsonWriter(r.train_dir / "dual_train.json") as w:
        for q in group_baseline_train(train_tsv, r.bad, r.opts.num_hard_negatives, r.stats):
            q.positives = [(coll.by_text_hash.get(hash(t)), t) for _, t in q.positives]
            q.negatives = [(coll.by_text_hash.get(hash(t)), t) for _, t in q.negatives]
            r.stats["train_passages_without_id"] += sum(p is None for p, _ in q.positives + q.negatives)
            if r.sibling_ids:  # ids are known only now
                q.negatives = _allowed(q, q.negatives, r.sibling_ids, r.stats)
            w.write(q.to_dpr(keep_qid=False))
    r.stats["train_questions"] = w.count
    r.timer.lap("train_s")
    return splits, coll


def _mine_and_fill(r: _Run, labelled: list[Question], coll: Collection, topk: dict[str, list[str]]) -> dict[str, str]:
    """BM25 negatives for the questions that have none, and the texts of positives given by id; returns the texts of
    the ids `topk` ranks (for dev_with_hn.json)."""
    todo = [q for q in labelled if not q.negatives and q.positives] if r.opts.bm25 else []
    miner = None
    if todo:
        miner = Bm25Miner(r.passages_tsv, coll, r.opts.num_hard_negatives, r.opts.num_workers, r.sibling_ids, r.stats)
        miner.search(todo)
    r.timer.lap("bm25_s")
    need_pids = {p for q in labelled for p, t in q.positives if t is None} | {p for v in topk.values() for p in v}
    by_doc, by_pid = fetch_texts(r.passages_tsv, {d for q in todo for d in q.mined}, need_pids)
    for q in labelled:
        if any(t is None for _, t in q.positives):
            q.positives = [(p, by_pid.get(p) if t is None else t) for p, t in q.positives]
            r.stats["positives_not_in_collection"] += sum(t is None for _, t in q.positives)
    if miner is not None:
        again = miner.check_texts(todo, by_doc)
        while again:  # a question lost candidates to identical texts: rank deeper, read the new texts
            miner.search(again)
            by_doc.update(fetch_texts(r.passages_tsv, {d for q in again for d in q.mined} - by_doc.keys(), set())[0])
            again = miner.check_texts(again, by_doc)
        for q in todo:
            q.negatives = [(coll.pids[d], by_doc[d]) for d in q.mined]
            r.stats["bm25_questions_short_of_negatives"] += len(q.mined) < r.opts.num_hard_negatives
        r.stats["bm25_mined_questions"] = len(todo)
    return by_pid


def _write_outputs(r: _Run, splits: dict[str, list[Question]], topk: dict[str, list[str]], by_pid: dict[str, str],
                   in_meta: dict | None) -> None:
    """The DPR files of every split (+ dev_with_hn.json), and the id-scheme record beside passages.tsv."""
    for split, qs in splits.items():
        name = {"train": "dual_train.json", "dev": "dual_dev.json", "test": "dual_test.json"}[split]
        write_dpr_json(r.train_dir / name, [q.to_dpr(keep_qid=True) for q in qs if any(t for _, t in q.positives)])
    if r.opts.dev_topk:
        missing = [q for q in splits["dev"] if q.qid not in topk]
        r.stats["dev_topk_questions_missing"] = len(missing)
        dev_hn = [with_topk_negatives(q, topk[q.qid], by_pid, r.opts.num_hard_negatives, r.sibling_ids, r.stats)
                  if q.qid in topk else q for q in splits["dev"]]
        write_dpr_json(r.train_dir / "dev_with_hn.json", [q.to_dpr(keep_qid=True) for q in dev_hn])
    if r.sibling_ids:  # beside passages.tsv, where the later steps (mining, subsetting) look for it
        write_meta(r.out, in_meta if in_meta and in_meta["id_scheme"] == PARAGRAPH_K else
                   {"id_scheme": PARAGRAPH_K, "made_by": "preprocess_dureader.py --sibling_ids"})
    elif in_meta is not None:
        write_meta(r.out, in_meta)
    r.timer.lap("write_s")


def _clear_leftovers(r: _Run) -> None:
    """An earlier run's id-scheme record (rewritten at the end when it still holds) and a killed run's temp files."""
    out_meta = meta_path(r.out)
    if out_meta.exists() and out_meta.resolve() != meta_path(r.root).resolve():
        out_meta.unlink()
        logger.info("removed %s (it described an earlier run's passages)", out_meta)
    outputs = [r.passages_tsv, out_meta, r.out / "preprocess_stats.json"]
    outputs += [r.train_dir / f"{name}.json" for name in ("dual_train", "dual_dev", "dual_test", "dev_with_hn")]
    for stale in [p for path in outputs for p in remove_stale_temps(path)]:
        logger.info("removed %s (left by an interrupted run)", stale)


def run(opts: Options) -> dict[str, Any]:
    """Preprocess; returns (and writes to preprocess_stats.json) counts and stage timings."""
    layout, root = detect_layout(Path(opts.input_dir), opts.layout)
    out = check_writable_dir(opts.output_dir)
    sibling_ids, why = sibling_ids_enabled(opts.sibling_ids, root)
    logger.info("layout %s in %s; paragraph-sibling rule %s (%s)", layout, root, "on" if sibling_ids else "off", why)
    r = _Run(opts, layout, root, out, sibling_ids)
    in_meta = read_meta(root)
    _clear_leftovers(r)
    splits, coll = (_read_release if layout == "release" else _read_baseline)(r)
    topk = read_dev_topk(opts.dev_topk) if opts.dev_topk else {}
    by_pid = _mine_and_fill(r, [q for qs in splits.values() for q in qs], coll, topk)
    _write_outputs(r, splits, topk, by_pid, in_meta)
    report = {"layout": layout, "input": str(root), "sibling_ids": sibling_ids, "sibling_ids_why": why,
              "counts": dict(sorted(r.stats.items())), "bad_lines": dict(r.bad.counts), "timings": r.timer.report()}
    write_json(out / "preprocess_stats.json", report)
    return report

