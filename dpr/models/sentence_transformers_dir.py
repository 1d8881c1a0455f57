"""sentence-transformers model directories, both ways.

Export: a tower's HF directory also becomes a complete sentence-transformers model for its side (modules.json,
1_Pooling/, 2_Normalize/, sentence_bert_config.json with the training max length and lowercasing, prompts for
`query`, `passage` and `document`), so `SentenceTransformer(dir).encode_query / encode_document` give our vectors.

Import: a directory a user brings (bge, m3e, text2vec style) is read for its pooling, normalisation, lowercasing and
prompts, so it encodes here as it does in sentence-transformers. Modules we cannot reproduce (Dense, LayerNorm,
Router, ...) and pooling modes we do not implement are refused with an error naming the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dpr.models.settings import EncoderSettings
from dpr.utils.io import InputError, atomic_write

MODULES_FILE = "modules.json"
ST_CONFIG_FILE = "sentence_bert_config.json"
PROMPTS_FILE = "config_sentence_transformers.json"
# ST's Pooling config: legacy boolean keys (every version reads them) and the mode each one names.
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}
SUPPORTED_POOLING = ("cls", "mean", "max", "lasttoken")
# encode_document takes the first of these prompts that a model has (sentence-transformers >= 5).
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


# ---------------------------------------------------------------- export

def write_sentence_transformers_files(directory: str | os.PathLike, dim: int, settings: EncoderSettings,
                                      max_length: int | None = None) -> None:
    """modules.json, 1_Pooling/, 2_Normalize/, sentence_bert_config.json and prompts for one tower's directory.

    max_length: the tower's training length (sentence-transformers truncates there); None keeps the tokenizer's.
    """
    directory = Path(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if settings.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    pooling: dict[str, Any] = {"word_embedding_dimension": dim}
    pooling.update({key: settings.pooling == mode for key, mode in LEGACY_POOLING_KEYS.items()})
    pooling["include_prompt"] = True
    (directory / "1_Pooling").mkdir(exist_ok=True)
    with atomic_write(directory / "1_Pooling" / "config.json") as f:
        json.dump(pooling, f, indent=2)
    with atomic_write(directory / MODULES_FILE) as f:
        json.dump(modules, f, indent=2)
    st_config: dict[str, Any] = {"do_lower_case": settings.lowercase}
    if max_length is not None:
        st_config = {"max_seq_length": int(max_length), **st_config}
    with atomic_write(directory / ST_CONFIG_FILE) as f:
        json.dump(st_config, f, indent=2)
    prompts = {"query": settings.query_prefix, "passage": settings.passage_prefix,
               "document": settings.passage_prefix}
    with atomic_write(directory / PROMPTS_FILE) as f:
        json.dump({"prompts": prompts, "default_prompt_name": None,
                   "similarity_fn_name": "cosine" if settings.normalize else "dot"}, f, indent=2, ensure_ascii=False)


# ---------------------------------------------------------------- import

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(path, f"not valid JSON: {e}") from None


def read_modules(directory: str | os.PathLike) -> list[dict] | None:
    """The module list of a sentence-transformers directory, or None when it is not one."""
    path = Path(directory) / MODULES_FILE
    if not path.is_file():
        return None
    modules = _read_json(path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise InputError(path, "expected a JSON list of {\"type\", \"path\", ...} modules")
    return modules


def _kind(module: dict) -> str:
    """'Transformer', 'Pooling', 'Normalize', ... (the class name, whatever package path a version wrote)."""
    return str(module["type"]).rsplit(".", 1)[-1]


def transformer_dir(directory: str | os.PathLike) -> Path:
    """Where the HF model and tokenizer of `directory` live: the Transformer module's folder in a
    sentence-transformers directory (often the directory itself, sometimes 0_Transformer/), else the directory."""
    directory = Path(directory)
    modules = read_modules(directory)
    for m in modules or []:
        if _kind(m) == "Transformer":
            return directory / str(m.get("path", ""))
    return directory


def _pooling_mode(path: Path) -> str:
    """The one pooling mode a 1_Pooling/config.json asks for (either config layout)."""
    config = _read_json(path)
    if not isinstance(config, dict):
        raise InputError(path, "expected a JSON object")
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode)
    else:
        modes = [m for key, m in LEGACY_POOLING_KEYS.items() if config.get(key)]
    if len(modes) != 1:
        raise InputError(path, f"pooling combines {modes or 'no'} modes; only one of {SUPPORTED_POOLING} is supported")
    if modes[0] not in SUPPORTED_POOLING:
        raise InputError(path, f"pooling mode {modes[0]!r} is not supported here (only {', '.join(SUPPORTED_POOLING)})")
    if config.get("include_prompt", True) is False:
        raise InputError(path, "include_prompt=false (prompt tokens left out of pooling) is not supported here")
    return modes[0]


def _prompts(directory: Path) -> tuple[str, str]:
    """(query prefix, passage prefix) as encode_query / encode_document pick them."""
    path = directory / PROMPTS_FILE
    if not path.is_file():
        return "", ""
    config = _read_json(path)
    prompts = config.get("prompts") or {} if isinstance(config, dict) else None
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise InputError(path, "'prompts' must be an object of strings")
    default = prompts.get(config.get("default_prompt_name") or "", "")
    query = prompts.get("query", default)
    passage = next((prompts[n] for n in DOCUMENT_PROMPT_NAMES if n in prompts), default)
    return query, passage


def read_settings(directory: str | os.PathLike) -> EncoderSettings | None:
    """Pooling, normalisation, lowercasing and prompts of a sentence-transformers directory; None if not one."""
    directory = Path(directory)
    modules = read_modules(directory)
    if modules is None:
        return None
    kinds = [_kind(m) for m in modules]
    other = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if other or kinds.count("Pooling") != 1 or kinds.count("Transformer") != 1:
        raise InputError(directory / MODULES_FILE,
                         f"modules {kinds}: only Transformer -> Pooling [-> Normalize] models can be loaded here"
                         + (f" ({', '.join(other)} not supported)" if other else ""))
    pooling_module = modules[kinds.index("Pooling")]
    pooling = _pooling_mode(directory / str(pooling_module.get("path", "")) / "config.json")
    lowercase = False
    st_config = transformer_dir(directory) / ST_CONFIG_FILE
    if not st_config.is_file():
        st_config = directory / ST_CONFIG_FILE
    if st_config.is_file():
        lowercase = bool((_read_json(st_config) or {}).get("do_lower_case", False))
    query, passage = _prompts(directory)
    return EncoderSettings(pooling=pooling, normalize="Normalize" in kinds, query_prefix=query,
                           passage_prefix=passage, lowercase=lowercase)
