"""The step-1 projection is serial + parallel / cores from per-passage costs; the memory bench measures a real peak."""
import numpy as np
import pytest

from bench.preprocess_scale import project
from bench.search_memory import AnonPeak
from tests.data_scripts import ROOT  # noqa: F401  (puts the repository on sys.path like the other script tests)


def test_projection_is_serial_plus_parallel_over_cores():
    costs = {"mean_chars": 100.0, "stream_s": 1e-5, "merge_s": 2e-5, "index_s": 3e-5, "tokenize_s": 1e-3,
             "search_s_per_query_per_passage": 1e-8}
    p = project(costs, 1_000_000, 10, 1000, 200.0)  # passages twice as long: tokens cost double
    serial = 1e6 * (1e-5 + 2 * (2e-5 + 3e-5))
    parallel = 1e6 * 2 * 1e-3 + 1000 * 1e6 * 2 * 1e-8
    assert p["serial_s"] == round(serial) and p["parallel_core_s"] == round(parallel)
    assert p["projected_minutes"] == pytest.approx((serial + parallel / 10) / 60, abs=0.05)


def test_anon_peak_sees_an_array_freed_before_the_end():
    import time
    with AnonPeak() as peak:
        a = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
        time.sleep(0.2)  # held while the sampler runs (it samples every 2 ms)
        del a
    assert peak.peak >= 60 << 20
