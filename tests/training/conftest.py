"""Session fixtures for the training tests (builders live in tests/training/builders.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.builders import make_dpr_json, make_model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_model_dir_no_dropout(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("tiny_bert_nodrop"), dropout=0.0)


@pytest.fixture(scope="session")
def tiny_train_file(tmp_path_factory) -> Path:
    return make_dpr_json(tmp_path_factory.mktemp("data") / "train.json", 24, seed=1)


@pytest.fixture(scope="session")
def tiny_dev_file(tmp_path_factory) -> Path:
    return make_dpr_json(tmp_path_factory.mktemp("data") / "dev.json", 8, seed=2)
