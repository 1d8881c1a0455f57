import json
import shutil

from dpr.models.encoder import Encoder
from dpr.models.fingerprint import model_fingerprint, tokenizer_sha256, tower_sha256
from tests.tiny_encoder import save_tiny_biencoder, tiny_bert, tiny_tokenizer


def test_fingerprint_is_by_content_not_path_or_transformers_version(tmp_path):
    a = save_tiny_biencoder(tmp_path / "a")
    shutil.copytree(a, tmp_path / "b")
    config = tmp_path / "b" / "passage_encoder" / "config.json"
    data = json.loads(config.read_text())
    data["transformers_version"] = "0.0.1"
    config.write_text(json.dumps(data, indent=4))
    fa, fb = model_fingerprint(str(a)), model_fingerprint(str(tmp_path / "b"))
    assert fa == fb and fa.question_tower != fa.passage_tower


def test_fingerprint_changes_with_weights_architecture_and_tokenizer(tmp_path):
    a = save_tiny_biencoder(tmp_path / "a")
    before = model_fingerprint(str(a))
    Encoder(tiny_bert(9)).save_pretrained(tmp_path / "p", tiny_tokenizer())
    assert tower_sha256(tmp_path / "p") != before.passage_tower
    config = a / "passage_encoder" / "config.json"
    config.write_text(config.read_text().replace('"layer_norm_eps": 1e-12', '"layer_norm_eps": 1e-05'))
    assert tower_sha256(a / "passage_encoder") != before.passage_tower
    tok = a / "passage_encoder" / "tokenizer_config.json"
    tok.write_text(tok.read_text().replace('"do_lower_case": true', '"do_lower_case": false'))
    assert tokenizer_sha256(a / "passage_encoder") != before.tokenizer


def test_one_directory_serves_both_towers(tmp_path):
    Encoder(tiny_bert(3)).save_pretrained(tmp_path / "m", tiny_tokenizer())
    fp = model_fingerprint(str(tmp_path / "m"))
    assert fp.question_tower == fp.passage_tower == tower_sha256(tmp_path / "m")
    assert model_fingerprint(str(tmp_path / "missing-model-name")) is None


def test_the_fingerprint_covers_the_tokenizer_the_loader_uses_and_the_stored_settings(tmp_path):
    """Both towers are tokenized with the question tower's tokenizer: that one is hashed (an edit of the passage
    directory's unused copy changes nothing); an edit of a tower's dpr_encoder.json changes that tower's hash."""
    from dpr.models.loading import TowerOptions, load_towers

    a = save_tiny_biencoder(tmp_path / "a")
    before = model_fingerprint(str(a))
    assert load_towers(TowerOptions(str(a)), need="passage").tokenizer.name_or_path == str(a / "question_encoder")
    for side, changes in (("passage_encoder", False), ("question_encoder", True)):
        tok = a / side / "tokenizer_config.json"
        tok.write_text(tok.read_text().replace('"do_lower_case": true', '"do_lower_case": false'))
        assert (model_fingerprint(str(a)).tokenizer != before.tokenizer) == changes, side
    settings = a / "passage_encoder" / "dpr_encoder.json"
    settings.write_text(settings.read_text().replace('"mean"', '"cls"'))
    after = model_fingerprint(str(a))
    assert after.passage_tower != before.passage_tower and after.question_tower == before.question_tower
