"""set_attention_dropout: what it changes, the kernel that follows, and the models it refuses."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import DistilBertConfig, DistilBertModel

from dpr.models.encoder import Encoder
from dpr.training.trainer import check_attention_dropout_off, set_attention_dropout
from tests.tiny_encoder import tiny_bert, tiny_tokenizer


def attention_kernels(encoder: Encoder) -> set[str]:
    """The scaled-dot-product kernels one training forward + backward runs."""
    batch = tiny_tokenizer()(["北京大学是哪一年成立的", "学"], return_tensors="pt", padding=True)
    encoder.train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        encoder(batch["input_ids"], batch["attention_mask"]).sum().backward()
    return {e.key for e in prof.key_averages() if e.key.startswith("aten::_scaled_dot_product")}


def test_sets_every_layer_and_the_config_and_switches_to_the_fused_kernel():
    enc = Encoder(tiny_bert(1))
    assert enc.model.config._attn_implementation == "sdpa"
    assert enc.model.config.attention_probs_dropout_prob == pytest.approx(0.1)
    assert "aten::_scaled_dot_product_attention_math" in attention_kernels(enc)  # dropout forces the composite path
    assert set_attention_dropout(enc, 0.0) == enc.model.config.num_hidden_layers
    assert enc.model.config.attention_probs_dropout_prob == 0.0
    assert all(m.p == 0.0 for n, m in enc.model.named_modules() if n.endswith("attention.self.dropout"))
    kernels = attention_kernels(enc)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels
    assert "aten::_scaled_dot_product_attention_math" not in kernels
    # hidden dropout is untouched: two training forwards still differ
    batch = tiny_tokenizer()(["北京大学"], return_tensors="pt")
    assert not torch.equal(enc(batch["input_ids"], batch["attention_mask"]),
                           enc(batch["input_ids"], batch["attention_mask"]))


def test_refuses_out_of_range_values_and_other_architectures():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        set_attention_dropout(Encoder(tiny_bert(1)), 1.0)
    distil = DistilBertModel(DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=20))
    with pytest.raises(ValueError, match="DistilBertModel has no BERT-style attention dropout"):
        set_attention_dropout(Encoder(distil), 0.0)


def test_sets_the_attribute_that_transformers_4_sdpa_reads():
    """transformers 4.x's BertSdpaSelfAttention passes `self.dropout_prob` to SDPA, not the Dropout module's p."""
    enc = Encoder(tiny_bert(1))
    layers = [m for n, m in enc.model.named_modules() if n.endswith("attention.self")]
    for m in layers:
        if not hasattr(m, "dropout_prob"):  # 5.x reads the module's p; give it 4.x's attribute too
            m.dropout_prob = 0.1
    set_attention_dropout(enc, 0.0)
    assert [m.dropout_prob for m in layers] == [0.0] * len(layers)
    assert [m.dropout.p for m in layers] == [0.0] * len(layers)


def test_effect_check_passes_when_attention_dropout_is_off_and_refuses_when_it_still_applies():
    enc = Encoder(tiny_bert(1))
    set_attention_dropout(enc, 0.0)
    enc.eval()
    rng = torch.get_rng_state()
    check_attention_dropout_off(enc)  # on the installed transformers: the flag works
    assert torch.equal(torch.get_rng_state(), rng) and not enc.training
    assert all(m.p == pytest.approx(0.1) for n, m in enc.model.named_modules()
               if isinstance(m, torch.nn.Dropout) and not n.endswith("attention.self.dropout"))  # hidden dropout back
    # a version that applies attention dropout from an attribute we do not set: simulated by a dropout on the scores'
    # output that no Dropout module controls
    layer = next(m for n, m in enc.model.named_modules() if n.endswith("attention.self"))
    layer.register_forward_hook(lambda mod, inp, out: (torch.nn.functional.dropout(out[0], 0.1, mod.training),
                                                       *out[1:]))
    with pytest.raises(ValueError, match="still differ"):
        check_attention_dropout_off(enc)


def test_training_refuses_attention_dropout_0_that_has_no_effect(tiny_model_dir, tiny_train_file, tmp_path, capsys,
                                                                  monkeypatch):
    import dpr.training.trainer as trainer
    from train_dense_encoder import main

    real = trainer.set_attention_dropout

    def sets_attributes_only(enc, p):  # attributes set, dropout still applied (a version that reads another one)
        n = real(enc, p)
        for m in (m for name, m in enc.model.named_modules() if name.endswith("attention.self")):
            m.register_forward_hook(lambda mod, inp, out: (torch.nn.functional.dropout(out[0], 0.1, mod.training),
                                                           *out[1:]))
        return n

    monkeypatch.setattr("train_dense_encoder.set_attention_dropout", sets_attributes_only)
    with pytest.raises(SystemExit):
        main(["--pretrained_model_cfg", str(tiny_model_dir), "--train_file", str(tiny_train_file), "--output_dir",
              str(tmp_path / "o"), "--attention_dropout", "0", "--num_workers", "0", "--no_progress"])
    err = capsys.readouterr().err
    assert "--attention_dropout 0" in err and "still differ" in err
    assert not list((tmp_path / "o").glob("dpr_biencoder.*"))


def test_the_check_leaves_the_runs_seeds_alone(tiny_model_dir, tiny_train_file, tmp_path, monkeypatch):
    """--attention_dropout 0's check ran after seed_everything(seed + rank) and called torch.manual_seed(0), which
    also reseeds every CUDA generator (lazily, last call wins): every rank's GPU dropout stream was seed 0. A
    stand-in for torch.cuda.manual_seed_all records the CUDA seeding; the last one must be --seed + rank."""
    from dpr.training.trainer import Trainer
    from train_dense_encoder import main

    cuda_seeds, at_fit = [], []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", cuda_seeds.append)
    monkeypatch.setattr(Trainer, "fit", lambda self: at_fit.append((list(cuda_seeds), torch.initial_seed())) or {})
    with pytest.raises(SystemExit):  # the stand-in fit trains nothing
        main(["--pretrained_model_cfg", str(tiny_model_dir), "--train_file", str(tiny_train_file), "--output_dir",
              str(tmp_path / "o"), "--attention_dropout", "0", "--seed", "11", "--num_workers", "0", "--no_progress",
              "--batch_size", "8"])
    (seeds, cpu_seed), = at_fit
    assert seeds and seeds[-1] == 11 and cpu_seed == 11  # rank 0: --seed + 0


@pytest.mark.parametrize("version, key", [("4.45.2", "torch_dtype"), ("4.55.4", "torch_dtype"), ("4.56.0", "dtype"),
                                          ("5.25.0", "dtype")])
def test_dtype_is_spelled_for_the_installed_transformers(version, key):
    from dpr.models.encoder import from_pretrained_kwargs

    assert from_pretrained_kwargs({"dtype": torch.float32, "x": 1}, version) == {key: torch.float32, "x": 1}
    assert from_pretrained_kwargs({"x": 1}, version) == {"x": 1}
