"""dpr/models/source.py: the one resolution of a model reference, shared by the loader and the fingerprint."""
from __future__ import annotations

import pytest

import dense_retriever as dr
import generate_dense_embeddings as gen
from dpr.models import loading
from dpr.models.encoder import EncoderSettings
from dpr.models.source import TowerOptions, expected_settings, model_source, resolve_model
from dpr.utils.io import InputError
from tests.models.conftest import make_bert_dir


def test_model_file_wins_over_pretrained_model_cfg_in_every_script():
    assert model_source("ckpt", "multilingual-e5-small") == "ckpt"
    assert model_source(None, "multilingual-e5-small") == "multilingual-e5-small"
    for script in (gen, dr):
        args = script.parse_args if script is gen else dr.parse_args
        argv = (["--ctx_file", "p.tsv", "--out_file", "o"] if script is gen else
                ["--qa_file", "q", "--encoded_ctx_file", "e", "--out_file", "o"])
        assert script.model_name(args(["--model_file", "m", "--pretrained_model_cfg", "x", *argv])) == "m"
        assert script.model_name(args(["--pretrained_model_cfg", "x", *argv])) == "x"
    assert loading.TowerOptions is TowerOptions  # one class, wherever it is imported from


def test_every_kind_of_source_resolves_to_its_towers(tmp_path):
    ckpt = tmp_path / "dpr_biencoder.0.1"
    ckpt.write_bytes(b"state")
    make_bert_dir(tmp_path / "dpr_biencoder.0.1.question_encoder", EncoderSettings(pooling="mean"), seed=1)
    make_bert_dir(tmp_path / "dpr_biencoder.0.1.passage_encoder", EncoderSettings(pooling="cls"), seed=2)
    dirs = resolve_model(ckpt)
    assert dirs.pair and dirs.local and dirs.tokenizer == dirs.question
    assert dirs.passage == str(tmp_path / "dpr_biencoder.0.1.passage_encoder")
    options = TowerOptions(str(ckpt), lowercase=True)
    assert expected_settings(options, "question").pooling == "mean"
    assert expected_settings(options, "passage") == EncoderSettings(pooling="cls", lowercase=True)
    single = make_bert_dir(tmp_path / "single")
    assert resolve_model(single).question == resolve_model(single).passage == str(single)
    assert not resolve_model(str(tmp_path / "nowhere")).local
    orphan = tmp_path / "dpr_biencoder.1.0"
    orphan.write_bytes(b"state")
    with pytest.raises(InputError, match="dpr_biencoder.1.0.question_encoder"):
        resolve_model(orphan)
