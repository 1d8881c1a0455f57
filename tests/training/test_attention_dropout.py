"""set_attention_dropout: what it changes, the kernel that follows, and the models it refuses."""
import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import DistilBertConfig, DistilBertModel

from dpr.models.encoder import Encoder
from dpr.training.trainer import set_attention_dropout
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
