"""Training levers for CUDA that a CPU can check: the fused AdamW kernel and pinned DataLoader batches (issue 23)."""
from __future__ import annotations

import torch

from dpr.training.data import BiEncoderData
from dpr.training.trainer import DistInfo, Trainer, build_optimizer
from train_dense_encoder import build_config, build_parser, load_models


def test_adamw_is_the_fused_kernel_with_the_same_update():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    ref = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    ref.load_state_dict(model.state_dict())
    opt = build_optimizer([model], 1e-2, 0.01, 1e-8)
    assert opt.defaults["fused"] is True  # CUDA always has it; torch's CPU build too
    plain = torch.optim.AdamW([{"params": [ref[0].weight, ref[1].weight], "weight_decay": 0.01},  # "1.weight": no
                               {"params": [ref[0].bias, ref[1].bias], "weight_decay": 0.0}],     # LayerNorm in name
                              lr=1e-2, eps=1e-8, foreach=False)
    for m, o in ((model, opt), (ref, plain)):
        for _ in range(3):
            o.zero_grad()
            m(torch.ones(2, 8)).square().sum().backward()
            o.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_loader_pins_batches_on_cuda_only(tiny_model_dir, tiny_train_file, tmp_path):
    args = build_parser().parse_args(["--pretrained_model_cfg", str(tiny_model_dir), "--train_file", str(tiny_train_file),
                                      "--output_dir", str(tmp_path), "--batch_size", "4", "--num_workers", "0",
                                      "--precision", "fp32"])
    q, p, tok = load_models(args, None)
    trainer = Trainer(build_config(args, q.settings.normalize, torch.device("cpu")), q, p, tok,
                      BiEncoderData(tiny_train_file), None, torch.device("cpu"), DistInfo())
    assert not trainer._loader(0, 0).pin_memory
    trainer.device = torch.device("cuda")
    assert trainer._loader(0, 0).pin_memory
