"""The analytical cost model against hand counts and torch's FLOP counter; ceilings and fractions."""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import impls
from impls.spec import RNNSpec, init_weights, make_inputs
from rnnbench import cli, cost, measure, store, sweep
from rnnbench.jobs import TimingJob


def test_lstm_hand_count():
    # T=2, B=3, I=5, H=4, G=4 (G*H = 16), one layer
    c = cost.rnn_cost("lstm", 1, batch=3, seq_len=2, input_size=5, hidden=4, mode="train", dtype="float32")
    assert c.terms == {
        "input_projection": 2 * 2 * 3 * 5 * 16,  # 960
        "recurrent": 2 * 2 * 3 * 4 * 16,  # 768
        "gate_math": 21 * 2 * 3 * 4,  # 504: 12 bias/sum + 4 activations + 3 for c + tanh(c) + o*tanh(c)
        "input_projection_backward": 1920,  # d(x) and dW_ih, each the forward's size
        "recurrent_backward": 1536,  # dh_prev and dW_hh
        "gate_math_backward": 31 * 24,  # 744
    }
    assert c.flops == 6432 and c.matmul_flops == 6432 - 504 - 744
    # forward: W 16*9 + 32 = 176, x 30, h0 c0 24, y 24, h_n c_n 24 -> 278 elements
    # saved i f g o c: 5*24 = 120, written and read -> 240
    # backward: W read + dW written 352, x read + dx written 60, y read + dy read 48, h0 c0 read + d written 48 -> 508
    assert c.bytes == (278 + 240 + 508) * 4
    fwd = cost.rnn_cost("lstm", 1, batch=3, seq_len=2, input_size=5, hidden=4, mode="forward", dtype="float32")
    assert fwd.flops == 960 + 768 + 504 and fwd.bytes == 278 * 4


def test_two_layer_gru_hand_count():
    # T=2, B=1, I=3, H=2, G=3 (G*H = 6); layer 1 reads layer 0's output (I=2)
    c = cost.rnn_cost("gru", 2, batch=1, seq_len=2, input_size=3, hidden=2, mode="forward", dtype="float64")
    assert c.terms == {"input_projection": 72 + 48, "recurrent": 48 + 48, "gate_math": 2 * 16 * 4}
    # layer 0: W 6*5 + 12 = 42, x 6, h0 2, y 4, h_n 2 -> 56; layer 1: W 6*4 + 12 = 36, in 4, 2, 4, 2 -> 48
    assert c.bytes == (56 + 48) * 8


def test_step_is_one_timestep_and_half_types_halve_bytes():
    c = cost.rnn_cost("rnn_tanh", 1, batch=4, seq_len=999, input_size=3, hidden=2, mode="step", dtype="float32")
    assert c.flops == 2 * 4 * 3 * 2 + 2 * 4 * 2 * 2 + 4 * 4 * 2  # 48 + 32 + 32
    assert c.bytes == (2 * 5 + 4 + 12 + 8 + 8 + 8) * 4
    bf16 = cost.rnn_cost("rnn_tanh", 1, batch=4, seq_len=999, input_size=3, hidden=2, mode="step", dtype="bfloat16")
    assert bf16.bytes * 2 == c.bytes and bf16.flops == c.flops


def test_the_issue_reference_lstm_train_step():
    c = cost.rnn_cost("lstm", 1, batch=32, seq_len=128, input_size=64, hidden=128, mode="train")
    assert c.matmul_flops == 3 * 2 * 128 * 32 * 512 * (64 + 128)  # 2.416 GFLOP
    assert 2.4e9 < c.flops < 2.5e9  # the gate math adds about 1%


def test_bidirectional_and_ragged_count_each_direction_over_valid_tokens_only():
    uni = cost.rnn_cost("gru", 1, batch=4, seq_len=10, input_size=3, hidden=2, mode="train", tokens=17)
    bi = cost.rnn_cost("gru", 1, batch=4, seq_len=10, input_size=3, hidden=2, mode="train", directions=2, tokens=17)
    assert bi.terms == {k: 2 * v for k, v in uni.terms.items()} and bi.bytes == 2 * uni.bytes
    assert uni.terms["recurrent"] == 2 * 17 * 2 * 6  # 17 valid (row, step) pairs, not B*T = 40
    assert cost.rnn_cost("gru", 1, 4, 10, 3, 2, "train").terms["recurrent"] == 2 * 40 * 2 * 6
    # layer 1 of a bidirectional model reads both directions of layer 0: I = 2H
    two = cost.rnn_cost("lstm", 2, batch=1, seq_len=3, input_size=5, hidden=2, mode="forward", directions=2)
    assert two.terms["input_projection"] == 2 * (2 * 3 * 5 * 8) + 2 * (2 * 3 * 4 * 8)
    # a record's cost and its sequential chain follow its length_mean and bidirectional fields
    rec = {"cell": "gru", "layers": 1, "batch": 4, "seq_len": 10, "input_size": 3, "hidden": 2, "mode": "train",
           "dtype": "float32", "bidirectional": True, "length_mean": 4.25}
    assert cost.record_cost(SimpleNamespace(**rec), "rnn")["flops"] == bi.flops
    assert cost.sequential_flops(rec) == uni.terms["recurrent"] + uni.terms["recurrent_backward"] // 2  # one chain


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru", "mingru", "minlstm"])
def test_matmul_flops_match_torch_flop_counter_over_torch_eager(cell, layers):
    T, B, I, H = 5, 3, 7, 6
    spec = RNNSpec(cell, I, H, layers)
    x, state, dy = make_inputs(spec, T, B, seed=1, with_state=True)
    runner = impls.get("torch_eager").build(spec, init_weights(spec), "cpu", "float32")
    x, state, dy = runner.put(x), runner.put(state), runner.put(dy)
    with FlopCounterMode(display=False) as forward:
        runner.forward(x, state)
    # the backward of forward_backward, with .backward(): FlopCounterMode's module tracker
    # rejects autograd.grad() on leaf inputs, and .backward() computes the same gradients
    leaves = [x] + (list(state) if spec.has_cell_state else [state])
    for t in leaves:
        t.requires_grad_(True)
    with FlopCounterMode(display=False) as train:
        y, _ = runner.module()(x, state if spec.has_cell_state else leaves[1])
        torch.autograd.backward(y, dy)
    assert all(t.grad is not None for t in leaves + list(runner.module().parameters()))
    ops = {str(op) for op in train.get_flop_counts()["Global"]}
    assert ops == {"aten.addmm", "aten.mm"}, ops  # only matmuls are counted by torch
    for mode, counter in (("forward", forward), ("train", train)):
        c = cost.rnn_cost(cell, layers, B, T, I, H, mode)
        assert c.matmul_flops == counter.get_total_flops(), mode


def test_transformer_hand_count():
    from impls.transformer import TransformerDims

    dims = TransformerDims(input_size=2, d_model=4, heads=2, layers=1, ffn=8)
    c = cost.transformer_cost(dims, batch=1, seq_len=2, mode="forward")  # N = 2 tokens, 3 causal pairs
    assert c.terms == {
        "input_projection": 2 * 2 * 2 * 4,  # 32
        "qkv_out_projection": 2 * 2 * 4 * 16,  # 256: [4, 12] and [4, 4] per token
        "attention": 2 * (2 * 3 * 4),  # 48: QK^T and PV over 3 pairs, 4 channels
        "ffn": 2 * (2 * 2 * 4 * 8),  # 256
        # input bias + positions 16; over 2 tokens: 2 LNs 112, 5 biases 56, residuals 16, GELU 16 -> 200;
        # softmax 6 * 2 heads * 3 pairs = 36; final LN 56
        "elementwise": 16 + 200 + 36 + 56,
    }
    params = 192
    assert dims.param_count() == params
    # params, x 4, input stage output 8, the block reads and writes 16, final norm 16
    assert c.bytes == (params + 4 + 8 + 16 + 16) * 4
    step = cost.transformer_cost(dims, batch=1, seq_len=99, mode="step")  # one token attends to itself
    assert step.terms["attention"] == 2 * (2 * 1 * 4)


@pytest.mark.parametrize("mode", ["forward", "train"])
def test_transformer_linear_flops_match_torch_flop_counter(mode):
    import numpy as np

    spec = RNNSpec("lstm", 8, 16, 1)
    runner = impls.get("transformer_sdpa").build(spec, None, "cpu", "float32")
    T, B = 6, 3
    x = runner.put(np.random.default_rng(0).standard_normal((T, B, 8)))
    with FlopCounterMode(display=False) as counter:
        if mode == "forward":
            runner.forward(x, None)
        else:
            x.requires_grad_(True)
            y, _ = runner.module()(x, None)
            torch.autograd.backward(y, torch.ones_like(y))
    counts = counter.get_flop_counts()["Global"]
    linear = sum(v for op, v in counts.items() if str(op) in ("aten.addmm", "aten.mm"))
    c = cost.transformer_cost(runner.dims, B, T, mode)
    # the attention kernel is not always counted by torch (its CPU flash kernel is not): compare the linears
    assert linear == sum(v for k, v in c.terms.items() if not k.startswith(("attention", "elementwise")))
    assert cost.record_cost(TimingJob("transformer_sdpa", batch=B, seq_len=T, mode=mode), "baseline",
                            runner.dims)["flops"] == c.flops


def test_complete_divides_by_the_ceilings():
    ceilings = {"cpu": {"matmul_flops_per_s": {"float32": 100e9}, "copy_bytes_per_s": 1e9,
                        "recurrent_matmul": [{"batch": 8, "hidden": 16, "gates": 4, "dtype": "float32",
                                              "flops_per_s": 40e9}]}}
    shape = dict(cell="lstm", layers=1, batch=8, seq_len=32, input_size=16, hidden=16, mode="forward", dtype="float32")
    c = cost.rnn_cost(**shape)
    rec = {"kind": "timing", "status": "ok", "backend_kind": "rnn", "device": "cpu", **shape,
           "flops": c.flops, "bytes": c.bytes, "median_s": 0.1}
    out = cost.complete(rec, ceilings)
    assert out["achieved_flops_per_s"] == pytest.approx(c.flops / 0.1)
    assert out["fraction_of_peak"] == pytest.approx(c.flops / 0.1 / 100e9)
    roofline_s = max(c.flops / 100e9, c.bytes / 1e9)
    chain_s = c.terms["recurrent"] / 40e9  # forward: the recurrent matmul at every step
    assert out["fraction_of_recurrent_roofline"] == pytest.approx(min(roofline_s, chain_s) / 0.1)
    train = cost.rnn_cost(**{**shape, "mode": "train"})
    bound = cost.time_lower_bound_s(ceilings, {**rec, "mode": "train", "flops": train.flops, "bytes": train.bytes})
    # in training the chain adds dh at each step back, not dW_hh (batched over steps)
    assert bound == pytest.approx(min(max(train.flops / 100e9, train.bytes / 1e9),
                                      (train.terms["recurrent"] + train.terms["recurrent_backward"] / 2) / 40e9))
    other_shape = cost.complete({**rec, "cell": "gru"}, ceilings)  # no gru step shape measured: the roofline alone
    assert other_shape["fraction_of_recurrent_roofline"] == pytest.approx(roofline_s / 0.1)
    assert cost.complete(rec, {"cpu": {"matmul_flops_per_s": {"float32": 100e9}}})[
        "fraction_of_recurrent_roofline"] is None  # no bandwidth measured: no roofline
    failed = cost.complete({**rec, "status": "error", "flops": None, "median_s": None}, ceilings)
    assert failed["achieved_flops_per_s"] is None and failed["fraction_of_peak"] is None
    assert failed["fraction_of_recurrent_roofline"] is None
    assert cost.complete({"kind": "stability"}, ceilings) == {"kind": "stability"}


COMMITTED = Path(__file__).resolve().parent.parent / "results" / "cpu-2core"


@pytest.mark.skipif(not COMMITTED.is_dir(), reason="the committed CPU result set is not in this checkout")
def test_recurrent_roofline_is_a_bound_on_the_committed_set():
    """No committed timing beats its lower bound (fused oneDNN LSTMs beat the old step "bound" by 1.63x)."""
    checked = 0
    for run_dir in sorted(COMMITTED.iterdir()):
        ceilings = json.loads((run_dir / store.RUN_JSON).read_text())["ceilings"]
        for rec in store.read_records(run_dir / store.RECORDS):
            if rec.get("kind") == "timing" and rec.get("status") == "ok" and rec.get("backend_kind") == "rnn":
                fraction = cost.complete({**rec, **cost.record_cost(SimpleNamespace(**rec), "rnn")},
                                         ceilings)["fraction_of_recurrent_roofline"]
                assert 0 < fraction <= 1, (rec["backend"], rec["batch"], rec["seq_len"], rec["hidden"], fraction)
                checked += 1
    assert checked >= 50


def test_ceiling_plan_takes_the_run_dtypes_and_recurrent_shapes():
    configs = [TimingJob("torch_eager", cell="gru", batch=8, hidden=16), TimingJob("torch_cudnn", cell="gru", batch=8, hidden=16),
               TimingJob("torch_eager", cell="lstm", batch=8, hidden=16, dtype="float64"),
               TimingJob("torch_eager", cell="lstm", device="cuda", dtype="bfloat16")]
    plan = measure.ceiling_plan(configs)
    assert plan["cpu"]["dtypes"] == ["float32", "float64"]
    assert plan["cpu"]["shapes"] == [(8, 16, 3, "float32"), (8, 16, 4, "float64")]
    assert plan["cuda"]["dtypes"] == ["bfloat16", "float16", "float32"]


def test_cli_run_stores_ceilings_once_and_completes_the_records(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RNNBENCH_CACHE_DIR", str(tmp_path / "cache"))  # measured here, in a child, once
    argv = ["run", "--backends", "torch_eager", "--cells", "lstm", "--batch", "4", "--seq-len", "8",
            "--hidden", "16", "--input-size", "8", "--mode", "train", "--out", str(tmp_path), "--quiet",
            "--no-report", "--machine", "box"]
    assert cli.main(argv) == 0
    (run_dir,) = (tmp_path / "box").iterdir()
    ceilings = json.loads((run_dir / "run.json").read_text())["ceilings"]["cpu"]
    assert ceilings["matmul_flops_per_s"]["float32"] > 1e8 and ceilings["copy_bytes_per_s"] > 1e7
    assert ceilings["matmul_precision"] == "ieee" and isinstance(ceilings["load_average_1min"], float)
    (cached,) = (tmp_path / "cache").glob("ceilings-*-cpu-*.json")  # one file: machine, versions, device
    assert json.loads(cached.read_text())["matmul_flops_per_s"] == ceilings["matmul_flops_per_s"]
    (step,) = ceilings["recurrent_matmul"]
    assert (step["batch"], step["hidden"], step["gates"], step["dtype"]) == (4, 16, 4, "float32")
    (rec,) = [r for r in store.read_records(run_dir / store.RECORDS) if r["kind"] == "timing"]
    expected = cost.rnn_cost("lstm", 1, 4, 8, 8, 16, "train")
    assert (rec["flops"], rec["bytes"]) == (expected.flops, expected.bytes)
    assert rec["achieved_flops_per_s"] == pytest.approx(rec["flops"] / rec["median_s"])
    assert rec["fraction_of_peak"] == pytest.approx(rec["achieved_flops_per_s"] / ceilings["matmul_flops_per_s"]["float32"])
    assert rec["fraction_of_recurrent_roofline"] == pytest.approx(cost.time_lower_bound_s({"cpu": ceilings}, rec)
                                                                  / rec["median_s"])
    assert cli.main(["run", "--resume", str(run_dir), "--quiet", "--no-report"]) == 0  # nothing left to do
    assert json.loads((run_dir / "run.json").read_text())["ceilings"]["cpu"] == ceilings  # not measured again

    def no_child(*args):
        raise AssertionError("a cached ceiling was measured again")

    monkeypatch.setattr(measure, "_ceilings_in_child", no_child)  # a cache hit starts no process
    job = TimingJob("torch_eager", "lstm", batch=4, seq_len=8, input_size=8, hidden=16)
    assert measure.machine_ceilings([job])["cpu"]["recurrent_matmul"] == ceilings["recurrent_matmul"]


def test_recommend_states_the_headroom():
    from rnnbench import recommend

    line = recommend._headroom({"median_s": 0.1, "fraction_of_peak": 0.25, "fraction_of_recurrent_roofline": 0.5})
    assert "25.0% of this machine's large-matmul FLOP/s" in line and "25 ms, 4x below" in line and "50.0% of its recurrent roofline" in line
    assert recommend._headroom({"median_s": 0.1, "fraction_of_peak": None}) == ""


def test_a_failing_ceilings_child_is_one_line_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    """A ceilings child that dies (here: its traceback ends in a line of punctuation, as a MemoryError's
    did) is one warning line naming its exception; the run is created without ceilings, not a traceback."""
    monkeypatch.setenv("RNNBENCH_CACHE_DIR", str(tmp_path / "cache"))
    real_run = subprocess.run
    dies = "import sys; sys.stderr.write('Traceback (most recent call last):\\nMemoryError: 2 TiB\\n  \"\\n'); sys.exit(1)"
    monkeypatch.setattr(measure.subprocess, "run", lambda cmd, **kw: real_run([sys.executable, "-c", dies], **kw))
    with pytest.raises(RuntimeError, match=r"exit status 1\): MemoryError: 2 TiB$"):
        measure.machine_ceilings([TimingJob("torch_eager", cell="lstm", batch=4, hidden=8)])
    run = sweep.create_run([TimingJob("torch_eager", cell="lstm", batch=4, hidden=8)], ["cpu"], "inline",
                           tmp_path / "runs", "box")
    run.release()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "MemoryError: 2 TiB" in err and err.startswith("warning:"), err
    assert json.loads((run.path / "run.json").read_text())["ceilings"] is None
