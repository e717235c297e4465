"""RNN vs transformer (issue 20): decode records, the crossover computation, the suite, the report
section and recommend's mention.  Structure and arithmetic only, never the clock: the curves are
synthetic with a known crossing."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rnnbench import crossover, store
from rnnbench.store import RecordError, Run

from .synthetic_results import timing_record


# -- the crossing of two curves ------------------------------------------------------------------


TS = (16, 64, 256, 1024, 4096)


def test_crossing_is_the_log_log_interpolation_of_the_known_point():
    rnn = [1e-3] * len(TS)  # constant per token
    attention = [1e-5 * t for t in TS]  # linear in T: equal at T = 100
    x = crossover.crossing(TS, rnn, attention)
    assert x.t == pytest.approx(100.0, rel=1e-9)
    assert not x.a_wins_below and x.crossings == 1  # the transformer is faster below, the RNN above
    assert "T≈100" in x.text() and "RNN faster above" in x.text()


def test_the_range_comes_from_the_spread_of_the_repeats():
    rnn, attention = [1e-3] * len(TS), [1e-5 * t for t in TS]
    spread = lambda v, f: ([x / f for x in v], [x * f for x in v])  # noqa: E731 - (low, high)
    x = crossover.crossing(TS, rnn, attention, spread(rnn, 1.1), spread(attention, 1.1))
    # RNN at its best against attention at its worst crosses at 1e-3/1.1 = 1.1e-5 T * ... and the reverse
    assert x.t_lo == pytest.approx((1e-3 / 1.1) / (1e-5 * 1.1), rel=1e-9)
    assert x.t_hi == pytest.approx((1e-3 * 1.1) / (1e-5 / 1.1), rel=1e-9)
    assert x.t_lo < x.t < x.t_hi


def test_a_range_that_leaves_the_grid_is_open():
    rnn, attention = [1e-3] * len(TS), [1e-5 * t for t in TS]
    x = crossover.crossing(TS, rnn, attention, ([v / 100 for v in rnn], [v * 100 for v in rnn]), None)
    assert x.t_lo is None and x.t_hi is None
    assert "range <16->4096" in x.text()


@pytest.mark.parametrize("rnn_factor,winner", [(0.5, "RNN"), (2.0, "transformer")])
def test_no_crossover_says_below_which_t_and_who_wins(rnn_factor, winner):
    attention = [1e-5 * t ** 0.5 for t in TS]
    x = crossover.crossing(TS, [v * rnn_factor for v in attention], attention)
    assert x.t is None and x.crossings == 0
    assert x.text() == f"no crossover below T=4096: {winner} faster at every measured T (16-4096)"


# -- from records: decode, train and memory curves ----------------------------------------------


def synthetic_crossover_run(root, rng=None) -> Run:
    """Decode: the RNN's step is constant, the transformer's grows with the context (equal at T=256);
    train: per token the RNN is constant, the transformer grows (equal at T=1024); state: h, c
    against a KV cache."""
    rng = rng or np.random.default_rng(0)
    run = Run.create(root, "synthbox", {"cpu_model": "Synthetic CPU", "gpu": {}, "versions": {}})
    B, H = 16, 64
    for backend, kind in (("torch_cudnn", "rnn"), ("transformer_sdpa", "baseline")):
        for T in TS:
            step_s = 1e-4 if kind == "rnn" else 1e-4 * T / 256
            state = 2 * B * H * 4 if kind == "rnn" else 2 * 2 * B * T * H * 4
            rec = timing_record(backend, "lstm", "decode", B, T, H, step_s, rng, noise=0.01,
                                tokens_per_s=None, state_bytes=state)
            rec["tokens_per_s"] = B / rec["median_s"]
            run.append(rec)
            per_token = 1e-6 if kind == "rnn" else 1e-6 * T / 1024
            run.append(timing_record(backend, "lstm", "train", B, T, H, per_token * B * T, rng, noise=0.01))
    return run


@pytest.fixture
def crossover_df(tmp_path):
    from rnnbench.results import load_inputs

    run = synthetic_crossover_run(tmp_path)
    return load_inputs([run.path])


def test_crossover_table_finds_each_modes_known_crossing(crossover_df):
    table = crossover.crossover_table(crossover_df)
    time = table[table["quantity"] == "time per token"].set_index("mode")
    assert set(time.index) == {"decode", "train"}
    assert time.loc["decode", "T"] == pytest.approx(256, rel=0.05)
    assert time.loc["train", "T"] == pytest.approx(1024, rel=0.05)
    decode = time.loc["decode", "crossover"]
    assert decode.t_lo <= decode.t <= decode.t_hi and not decode.a_wins_below
    memory = table[(table["quantity"] == "memory") & (table["mode"] == "decode")].iloc[0]
    assert memory["T"] is None or math.isnan(memory["T"])
    assert memory["verdict"].startswith("no crossover below T=4096: torch_cudnn smaller")


def test_near_keeps_the_crossings_within_a_factor(crossover_df):
    table = crossover.crossover_table(crossover_df)
    table = table[table["quantity"] == "time per token"]  # (the synthetic train memory crosses at T = 4H = 256)
    assert set(crossover.near(table, 300)["mode"]) == {"decode"}
    assert set(crossover.near(table, 2000)["mode"]) == {"train"}
    assert crossover.near(table, 16).empty


def test_report_section_renders_three_figures_and_the_table(tmp_path):
    from rnnbench.report import build_report
    from rnnbench.results import load_inputs

    run = synthetic_crossover_run(tmp_path / "runs")
    out = build_report(load_inputs([run.path]), tmp_path / "report")
    section = next(s for s in out["sections"] if s.title == "RNN vs transformer")
    figures = [b for b in section.blocks if b[0] == "figure"]
    assert [f[1].name.split("_")[0 if f[1].name.startswith("surface") else 1] for f in figures] == [
        "decode", "train", "memory", "surface", "surface"]  # a map each for decode and train
    assert all(f[1].is_file() for f in figures)
    tables = [b[1] for b in section.blocks if b[0] == "table"]
    assert any("verdict" in t.columns and t["verdict"].str.contains("T≈").any() for t in tables)
    md = out["md"].read_text()
    assert "## RNN vs transformer" in md and "no crossover below T=4096" in md


SURFACE_H = (64, 256, 1024, 2048)


def synthetic_surface_run(root) -> Run:
    """Train time per token at I = H: the RNN's 1e-9 H^2, the transformer's half that plus 1e-8 T, so
    their ratio is 0.5 + 10 T / H^2: the RNN wins from T = 0.05 H^2 (205 at H=64, 3277 at H=256), never
    at H >= 1024 within T <= 4096."""
    rng = np.random.default_rng(0)
    run = Run.create(root, "synthbox", {"cpu_model": "Synthetic CPU", "gpu": {}, "versions": {}})
    for H in SURFACE_H:
        for T in TS:
            for backend, per_token in (("torch_cudnn", 1e-9 * H * H), ("transformer_sdpa", 0.5e-9 * H * H + 1e-8 * T)):
                run.append(timing_record(backend, "lstm", "train", 16, T, H, per_token * 16 * T, rng, noise=0.0,
                                         input_size=H))
    return run


def test_the_surface_gives_the_ratio_at_each_width_and_length_and_says_where_each_wins(tmp_path):
    from rnnbench.results import load_inputs

    df = load_inputs([synthetic_surface_run(tmp_path).path])
    surf = crossover.surface(df)
    assert len(surf) == len(SURFACE_H) * len(TS) and set(surf["input_size"]) == set(SURFACE_H)
    ratio = surf.set_index(["hidden", "seq_len"])["ratio"]
    for H in SURFACE_H:
        for T in TS:
            assert ratio[(H, T)] == pytest.approx(0.5 + 10 * T / H ** 2, rel=1e-9)
    assert crossover.verdicts(surf) == [
        "LSTM train, float32, B=16, cpu, H (= I) 64, 256, 1024, 2048, T 16-4096: torch_cudnn is faster per token "
        "at 4 of 20 points (up to x10.50); transformer_sdpa at 16 (H=64: T 16-64; H=256: T 16-1024; H=1024: "
        "T 16-4096; H=2048: T 16-4096; up to x2.00)."]
    table = crossover.crossover_table(df)
    time = table[table["quantity"] == "time per token"].set_index("hidden")
    assert 64 < time.loc[64, "T"] < 256 and 1024 < time.loc[256, "T"] < 4096  # log-log between the points around
    shown = crossover.collapsed(table)
    shown = shown[shown["quantity"] == "time per token"]
    # the two widths where the transformer wins at every T say the same: one row
    assert sorted(shown["hidden"]) == ["1024, 2048", "256", "64"]
    assert shown.set_index("hidden").loc["1024, 2048", "verdict"].startswith(
        "no crossover below T=4096: transformer_sdpa faster")


def test_recommend_mentions_a_crossover_near_the_query(tmp_path):
    from rnnbench.recommend import recommend

    synthetic_crossover_run(tmp_path)
    near = recommend("lstm", 16, 300, "decode", "cpu", hidden=64, results=[tmp_path])
    assert any("crossover" in n and "transformer_sdpa" in n for n in near.notes), near.notes
    far = recommend("lstm", 16, 16, "decode", "cpu", hidden=64, results=[tmp_path])
    assert not any("crossover" in n for n in far.notes)


# -- decode records and the suite -----------------------------------------------------------------


def test_a_finished_decode_record_needs_state_bytes():
    rec = timing_record("torch_cudnn", "lstm", "decode", 4, 8, 16, 1e-4, np.random.default_rng(0),
                        run_id="r", state_bytes=512)
    store.check_record(rec)
    with pytest.raises(RecordError, match="state_bytes"):
        store.check_record({k: v for k, v in rec.items() if k != "state_bytes"})


@pytest.mark.parametrize("backend", ["torch_cudnn", "transformer_sdpa"])
def test_decode_records_carry_the_state_and_count_b_tokens(backend):
    from rnnbench.jobs import TimingJob
    from rnnbench.measure import measure

    sizes = {}
    for T in (8, 32):
        job = TimingJob(backend, "lstm", batch=3, seq_len=T, input_size=8, hidden=16, mode="decode",
                        min_repeats=2, min_time_s=0.0, max_time_s=0.05)
        [rec] = measure(job, memory="skip", ceilings={})
        assert rec["status"] == "ok", rec["message"]
        store.check_record({**rec, "run_id": "r"})
        assert rec["tokens_per_s"] == pytest.approx(3 / rec["median_s"])
        sizes[T] = rec["state_bytes"]
    if backend == "torch_cudnn":
        assert sizes[8] == sizes[32] == 2 * 3 * 16 * 4  # h and c [1, B, H] float32
    else:
        assert sizes[32] == 4 * sizes[8]  # a KV cache of T positions


def test_crossover_suite_shape():
    from rnnbench.sweep import build_configs

    cpu = build_configs("crossover")
    backends = {c.backend for c in cpu}
    assert {"torch_cudnn", "transformer_sdpa", "transformer_jax"} <= backends and "triton" not in backends
    assert sum(b.startswith("jax_scan") for b in backends) == 1
    assert {c.seq_len for c in cpu} == set(TS) and {c.hidden for c in cpu} == {64, 256, 1024}
    assert all(c.input_size == c.hidden for c in cpu)
    assert {c.batch for c in cpu if c.mode == "decode"} == {1, 16}
    assert {c.batch for c in cpu if c.mode != "decode"} == {16}
    assert {c.mode for c in cpu} == {"decode", "forward", "train"}
    assert {c.dtype for c in cpu} == {"float32", "bfloat16"}
    # the surface's widest width: one pair, every mode and dtype; train to T=1024, the others to 4096
    wide = [c for c in cpu if c.hidden == 1024]
    assert {c.backend for c in wide} == {"torch_cudnn", "transformer_sdpa"}
    assert {(c.mode, c.dtype) for c in wide} == {(m, d) for m in ("decode", "forward", "train")
                                                 for d in ("float32", "bfloat16")}
    assert max(c.seq_len for c in wide if c.mode == "train") == 1024
    assert max(c.seq_len for c in wide if c.mode != "train") == 4096
    assert all(c.max_point_s == 120.0 for c in cpu)
    cuda = build_configs("crossover", {"device": ["cuda"]})
    assert "triton" in {c.backend for c in cuda} and max(c.seq_len for c in cuda) == 16384
    assert max(c.hidden for c in cuda) == 2048


def test_a_member_too_big_for_the_machine_is_unsupported_with_the_estimate():
    from rnnbench.jobs import TimingJob
    from rnnbench.measure import measure

    job = TimingJob("transformer_jax", "lstm", batch=64, seq_len=65536, input_size=64, hidden=256, mode="train")
    [rec] = measure(job, memory="skip", ceilings={})
    assert rec["status"] == "unsupported" and "estimated" in rec["message"] and "GiB" in rec["message"]


def test_gradient_reach_resolves_short_reaches_and_keeps_what_reaches_t0():
    import pandas as pd

    from rnnbench.report.crossover import gradient_reach
    from rnnbench.stability import downsample

    T = 4096
    t = np.arange(T)
    rnn = 10.0 ** (-0.2 * (T - 1 - t))  # an RNN's gradient: 0.2 decades a step, below 1e-3 after 15 steps
    attention = np.full(T, 1.0 / T)  # attention's: the token's own path at T-1, then flat at 1/T
    attention[-1] = 1.0
    short = 10.0 ** (-0.01 * (31 - np.arange(32)))  # T=32, every step kept: reach 31 steps, whole sequence
    common = {"kind": "stability", "status": "ok", "device": "cpu", "dtype": "float32", "cell": "lstm", "hidden": 64}
    df = pd.DataFrame([
        {**common, "seq_len": T, "backend": "rnn", "backend_kind": "rnn", "grad_profile": downsample(rnn),
         "grad_decay_per_step": -0.2},
        {**common, "seq_len": T, "backend": "attn", "backend_kind": "baseline", "grad_profile": downsample(attention),
         "grad_decay_per_step": -0.0009},
        {**common, "hidden": 8, "seq_len": 32, "backend": "rnn", "backend_kind": "rnn",
         "grad_profile": downsample(short), "grad_decay_per_step": -0.01}])
    out = gradient_reach(df).set_index(["hidden", "backend"])
    spacing = round((T - 1) / 63)  # 64 points over 4096 steps
    assert out.loc[(64, "rnn"), "reach (steps back)"] == f"< {spacing}"  # not "0": below the profile's resolution
    assert out.loc[(64, "rnn"), "left at t=0"] == "0 (underflow)"
    assert out.loc[(64, "attn"), "left at t=0"] == f"{1 / T:.1e}"  # attention keeps 1/T at any distance
    assert out.loc[(8, "rnn"), "reach (steps back)"] == "31" and out.loc[(8, "rnn"), "whole sequence"]


def test_recommend_against_the_transformer_measured_interpolated_or_not_measured(tmp_path):
    """At a measured point the ratio is the surface's; between points, log-log interpolation (here exact:
    per token is a power of H at fixed T); outside the grid, 'not measured' with the command."""
    from rnnbench.recommend import recommend

    synthetic_surface_run(tmp_path)
    at = recommend("lstm", 16, 4096, "train", "cpu", hidden=64, input_size=64, results=[tmp_path],
                   against_transformer=True)
    assert "measured at this shape" in at.against
    assert f"the RNN is x{0.5 + 10 * 4096 / 64 ** 2:.2f} faster" in at.against
    # H=128 between 64 and 256 at T=16: RNN 1e-9 H^2 is exact in log-log; so is the baseline's H^2 term,
    # whose 1e-8 T part is small at T=16
    between = recommend("lstm", 16, 16, "train", "cpu", hidden=128, input_size=128, results=[tmp_path],
                        against_transformer=True)
    assert "interpolated log-log between H 64-256 and T 16" in between.against
    assert f"torch_cudnn {1e-9 * 128 ** 2 * 1e6:.3g} us/token" in between.against
    assert "the transformer is x" in between.against
    outside = recommend("lstm", 16, 8192, "train", "cpu", hidden=64, input_size=64, results=[tmp_path],
                        against_transformer=True)
    assert outside.against.startswith("not measured: the query (H=64, T=8192) lies outside the measured grid")
    assert "rnnbench run --backends torch_cudnn,transformer_sdpa" in outside.against
    assert "against the transformer: not measured" in str(outside)
    assert recommend("lstm", 16, 64, "train", "cpu", hidden=64, results=[tmp_path]).against == ""
