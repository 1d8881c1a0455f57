"""Defect 6: a DataLoader worker passes each tensor through its own file descriptor, so the number of tensors per
batch must not grow with the chunk count (144 one-passage chunks here, under a 64-file limit)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_many_chunks_under_a_low_open_file_limit(tiny_model_dir, tiny_train_file, tmp_path):
    worker = Path(__file__).with_name("loader_fd_worker.py")
    try:
        proc = subprocess.run([sys.executable, str(worker), str(tiny_model_dir), str(tiny_train_file), str(tmp_path),
                               "64"], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise AssertionError("the loader hung (its worker died under the open-file limit)") from None
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["chunks", "144"]  # 24 questions x 6 passages, one chunk each
