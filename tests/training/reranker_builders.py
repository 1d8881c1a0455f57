"""DPR JSON files with a planted relevance signal for the reranker tests: every positive passage holds the marker
character (three times), no negative holds it; a model that learns to look for it ranks positives first."""
from __future__ import annotations

import json
import random
from pathlib import Path

from tests.training.builders import CHARS

MARKER = "么"
PLAIN = CHARS.replace(MARKER, "")


def text(rng: random.Random, lo: int, hi: int, chars: str = PLAIN) -> str:
    return "".join(rng.choice(chars) for _ in range(rng.randint(lo, hi)))


def planted_passage(rng: random.Random) -> str:
    body = list(text(rng, 8, 30))
    for _ in range(3):
        body.insert(rng.randint(0, len(body)), MARKER)
    return "".join(body)


def make_planted_json(path: Path, n: int, seed: int, n_hard: int = 5, id_prefix: str = "") -> Path:
    """n questions; positive k of question i is `{prefix}{i}-0` (its paragraph i), negatives `{prefix}n{i}-{j}`."""
    rng = random.Random(seed)
    items = [{"question": text(rng, 3, 10), "question_id": str(i), "answers": [],
              "positive_ctxs": [{"title": "", "text": planted_passage(rng), "passage_id": f"{id_prefix}{i}-0"}],
              "hard_negative_ctxs": [{"title": "", "text": text(rng, 8, 33), "passage_id": f"{id_prefix}n{i}-{j}"}
                                     for j in range(n_hard)],
              "negative_ctxs": []} for i in range(n)]
    path.write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    return path
