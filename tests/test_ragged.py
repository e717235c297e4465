"""Ragged and bidirectional batches in the harness (issue 19): the transformer baselines' key-padding
mask and encoder."""
import numpy as np
import pytest

import impls
from impls.spec import RNNSpec, Unsupported

LENGTHS = np.array([10, 4, 1])  # [B]: the whole row, part of it, one step
BASELINE_DTYPES = {"transformer_sdpa": "float64", "transformer_jax": "float32"}  # JAX float64 needs its own process
TOL = {"float64": 1e-12, "float32": 1e-5}


def _baseline(name: str, bidirectional: bool):
    spec = RNNSpec("lstm", 8, 16, 1, bidirectional=bidirectional)
    return impls.get(name).build(spec, None, "cpu", BASELINE_DTYPES[name])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "encoder"])
@pytest.mark.parametrize("name", list(BASELINE_DTYPES))
def test_masked_positions_do_not_affect_valid_outputs(name, bidirectional):
    """Padding of any value changes no valid output, y is 0 in the padding, the padding gets no
    gradient, and a ragged row is exactly that row run alone at its own length."""
    runner = _baseline(name, bidirectional)
    tol = TOL[BASELINE_DTYPES[name]]
    rng = np.random.default_rng(0)
    T, B = 10, len(LENGTHS)
    x = rng.standard_normal((T, B, 8))  # [T, B, I]
    valid = np.arange(T)[:, None] < LENGTHS  # [T, B]
    noisy = np.where(valid[..., None], x, 50 * rng.standard_normal(x.shape))  # other padding, same valid part
    y = runner.get(runner.forward(x, None, lengths=LENGTHS)[0])  # [T, B, d_model]
    y_noisy = runner.get(runner.forward(noisy, None, lengths=LENGTHS)[0])
    assert np.array_equal(y[valid], y_noisy[valid])
    assert not np.any(y[~valid])
    for b, length in enumerate(LENGTHS):
        alone = runner.get(runner.forward(x[:length, b:b + 1], None)[0])  # [len, 1, d_model]
        assert np.abs(alone[:, 0] - y[:length, b]).max() <= tol * np.abs(alone).max()
    dy = rng.standard_normal(y.shape)
    dx = runner.get(runner.forward_backward(x, None, dy, lengths=LENGTHS)["x"])  # [T, B, I]
    assert not np.any(dx[~valid]) and np.abs(dx[valid]).max() > 0


@pytest.mark.parametrize("name", list(BASELINE_DTYPES))
def test_bidirectional_baseline_is_a_non_causal_encoder(name):
    """Causal: y_0 ignores x_5; the encoder's y_0 depends on it.  Neither has a next step."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 2, 8))
    later = x.copy()
    later[5] += 1.0
    for bidirectional, depends in ((False, False), (True, True)):
        runner = _baseline(name, bidirectional)
        y0 = [runner.get(runner.forward(a, None)[0])[0] for a in (x, later)]
        assert (np.abs(y0[0] - y0[1]).max() > 1e-3) == depends
    with pytest.raises(Unsupported, match="unidirectional"):
        _baseline(name, True).step(x[0])


# -- the harness: lengths drawn once, records, unsupported, stability, report, recommend, CLI ---------

FAST = dict(min_time_s=0.01, max_time_s=0.05, min_repeats=3)
TINY = dict(batch=6, seq_len=12, input_size=8, hidden=16)  # the smallest a baseline matches


def test_lengths_are_one_seeded_draw_of_the_named_distribution():
    from rnnbench import ragged
    from rnnbench.config import ConfigError

    assert ragged.draw("full", 12, 6) is None
    uniform = ragged.draw("uniform:5", 12, 200, seed=3)
    assert uniform.dtype == np.int64 and uniform.min() >= 5 and uniform.max() <= 12 and len(set(uniform)) == 8
    assert np.array_equal(uniform, ragged.draw("uniform:5", 12, 200, seed=3))  # the configuration's seed decides
    assert not np.array_equal(uniform, ragged.draw("uniform:5", 12, 200, seed=4))
    zipf = ragged.draw("zipf:1.2", 64, 500)
    # Zipf's law: length 1 the likeliest (1/zeta(1.2) = 18%), a long tail clipped at T
    assert zipf.min() == 1 and zipf.max() == 64 and 0.12 < (zipf == 1).mean() < 0.24 and (zipf == 64).mean() > 0.2
    assert ragged.summary("zipf:1.2", 64, 500) == {"length_mean": float(zipf.mean()), "length_min": 1}
    for bad in ("zipf:1", "uniform:0", "uniform:2.5", "uneven", "full:3"):
        with pytest.raises(ConfigError, match="valid: full, uniform:MIN"):
            ragged.parse(bad)


@pytest.mark.parametrize("backend", ["torch_cudnn", "torch_cudnn_padded", "torch_eager", "transformer_sdpa"])
def test_a_ragged_record_counts_valid_tokens_and_every_backend_sees_the_same_lengths(backend):
    from rnnbench import ragged, store
    from rnnbench.jobs import TimingJob, record_key
    from rnnbench.measure import Prepared, measure

    job = TimingJob(backend, "gru", mode="forward", lengths="zipf:1.2", **TINY, **FAST)
    lengths = ragged.draw("zipf:1.2", TINY["seq_len"], TINY["batch"], seed=0)
    assert np.array_equal(Prepared(job).lengths, lengths)  # what the runner is called with
    (rec,) = measure(job, memory="skip", ceilings={})
    store.check_record({"run_id": "r", **rec})
    assert rec["status"] == "ok" and record_key(rec) == job.key()
    assert (rec["bidirectional"], rec["lengths"]) == (False, "zipf:1.2")
    assert (rec["length_mean"], rec["length_min"]) == (float(lengths.mean()), int(lengths.min()))
    assert rec["tokens_per_s"] == pytest.approx(lengths.sum() / rec["median_s"])
    assert rec["padded_tokens_per_s"] == pytest.approx(TINY["batch"] * TINY["seq_len"] / rec["median_s"])
    if backend != "transformer_sdpa":
        assert rec["max_rel_err"] < 1e-5  # against the oracle on the same ragged batch


def test_what_a_backend_does_not_implement_is_unsupported_with_its_reason():
    from rnnbench.jobs import TimingJob
    from rnnbench.measure import measure

    cases = {("torch_cudnn_padded", True, "full", "train"): "padded batch cannot run the reverse direction",
             ("torch_eager", False, "uniform:3", "step"): "takes no lengths",
             ("torch_eager", True, "full", "step"): "unidirectional only"}
    for (backend, bidirectional, lengths, mode), reason in cases.items():
        (rec,) = measure(TimingJob(backend, "lstm", mode=mode, bidirectional=bidirectional, lengths=lengths,
                                   **TINY, **FAST), memory="skip", ceilings={})
        assert rec["status"] == "unsupported" and reason in rec["message"], (backend, rec["message"])
        assert rec["bidirectional"] == bidirectional and rec["lengths"] == lengths


def test_a_bidirectional_model_has_both_gradient_profiles_running_opposite_ways():
    from rnnbench.jobs import TimingJob
    from rnnbench.measure import measure

    profiles = {}
    for backend in ("torch_eager", "torch_cudnn"):
        timing, stab = measure(TimingJob(backend, "lstm", mode="train", bidirectional=True, **{**TINY, "seq_len": 24},
                                         **FAST), memory="skip", ceilings={})
        assert timing["status"] == stab["status"] == "ok" and stab["bidirectional"] is True
        forward, reverse = np.array(stab["grad_profile"]), np.array(stab["grad_profile_reverse"])
        assert len(forward) == len(reverse) == 24
        assert forward[-1] > forward[0] and reverse[0] > reverse[-1]  # each falls away from its probe
        assert stab["grad_decay_per_step"] < 0 and stab["grad_decay_per_step_reverse"] < 0
        profiles[backend] = (forward, reverse)
    for a, b in zip(profiles["torch_eager"], profiles["torch_cudnn"]):  # the same quantity on two backends
        assert np.abs(a - b).max() <= 1e-4 * a.max()
    (uni,) = [r for r in measure(TimingJob("torch_eager", "lstm", mode="train", **TINY, **FAST), memory="skip",
                                 ceilings={}) if r["kind"] == "stability"]
    assert "grad_profile_reverse" not in uni


def test_the_ragged_suite_sweeps_both_axes_and_the_cli_refuses_bad_values(tmp_path, capsys):
    from rnnbench import cli
    from rnnbench.sweep import build_jobs

    jobs = build_jobs("ragged")
    assert {(j.bidirectional, j.lengths) for j in jobs} == {(b, n) for b in (False, True)
                                                            for n in ("full", "uniform:16", "zipf:1.2")}
    assert {"torch_cudnn", "torch_cudnn_padded", "transformer_sdpa"} <= {j.backend for j in jobs}
    assert len({j.key() for j in jobs}) == len(jobs)
    triton = {"triton", "triton_wt", "triton_stepwise"}
    assert not triton & {j.backend for j in jobs}  # the interpreter on a CPU: exactness, not speed
    on_cuda = build_jobs("ragged", {"device": ["cuda"]})
    assert triton <= {j.backend for j in on_cuda} and {j.device for j in on_cuda} == {"cuda"}
    assert {(j.bidirectional, j.lengths) for j in on_cuda if j.backend == "triton"} == {
        (b, n) for b in (False, True) for n in ("full", "uniform:16", "zipf:1.2")}
    for flags, words in ((["--lengths", "zipf:0.5"], "valid: full, uniform:MIN"),
                         (["--bidirectional", "maybe"], "true or false")):
        assert cli.main(["run", "--out", str(tmp_path), *flags]) == 2
        assert words in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def _ragged_run(root):
    """A synthetic ragged result set: packed backends' time follows the valid tokens, the padded one's
    the padded tokens; a bidirectional model takes twice as long."""
    from rnnbench import ragged
    from rnnbench.store import Run

    from .synthetic_results import stability_record, timing_record

    rng = np.random.default_rng(0)
    run = Run.create(root, "synthbox", {"cpu_model": "Synthetic"})
    B, T, H = 32, 128, 128
    per_token = {"torch_cudnn": 1e-6, "torch_eager": 3e-6, "torch_cudnn_padded": 1e-6}
    for backend, cost in per_token.items():
        for cell in ("lstm", "gru"):
            for mode in ("forward", "train"):
                for bidirectional in (False, True):
                    for name in ("full", "uniform:16", "zipf:1.2"):
                        if backend == "torch_cudnn_padded" and bidirectional:
                            continue
                        lengths = ragged.draw(name, T, B)
                        valid = ragged.valid_tokens(lengths, T, B)
                        work = B * T if backend == "torch_cudnn_padded" else valid
                        seconds = cost * work * (2 if bidirectional else 1) * (3 if mode == "train" else 1)
                        for r in range(8):  # enough rounds for the paired signed-rank test
                            rec = timing_record(backend, cell, mode, B, T, H, seconds, rng, round=r, round_noise=0.02,
                                                bidirectional=bidirectional, lengths=name, **ragged.summary(name, T, B))
                            run.append({**rec, "tokens_per_s": valid / rec["median_s"],
                                        "padded_tokens_per_s": B * T / rec["median_s"]})
    for bidirectional in (False, True):
        stab = {**stability_record("torch_cudnn", "lstm", B, T, H), "bidirectional": bidirectional, "lengths": "full"}
        if bidirectional:
            stab.update(grad_profile_reverse=stab["grad_profile"][::-1], grad_decay_per_step_reverse=-0.05)
        run.append(stab)
    return run, per_token


def test_the_ragged_batches_section_gives_time_per_valid_token_and_packed_vs_padded(tmp_path):
    from rnnbench import report, results

    run, per_token = _ragged_run(tmp_path)
    built = report.build_report(results.load_inputs([run.path]), tmp_path / "report")
    (section,) = [s for s in built["sections"] if s.title == "Ragged batches"]
    tables = [b[1] for b in section.blocks if b[0] == "table"]
    per_valid = tables[0]
    assert list(per_valid.columns[-3:]) == ["full", "uniform:16", "zipf:1.2"]
    for _, row in per_valid.iterrows():  # µs per valid token, 2% noise
        factor = (2 if row["model"] == "bidirectional" else 1) * (3 if row["mode"] == "train" else 1)
        expected = per_token[row["backend"]] * 1e6 * factor
        if row["backend"] != "torch_cudnn_padded":
            for name in ("full", "uniform:16", "zipf:1.2"):
                assert float(row[name]) == pytest.approx(expected, rel=0.05)
        else:  # the padding is paid: per valid token it costs T / mean length more
            assert float(row["zipf:1.2"]) > 2.5 * float(row["full"])
    packed_padded = tables[1]
    zipf = packed_padded[packed_padded["lengths"] == "zipf:1.2"]
    assert len(zipf) == 4 and (zipf["padded / packed"].astype(float) > 2.5).all() and set(zipf["rounds"]) == {"8"}
    assert all(c.startswith("slower x3.") for c in zipf["change"])  # paired signed-rank over 8 rounds
    assert any(b[0] == "figure" and b[1].is_file() for b in section.blocks)
    regimes = [s for s in built["sections"] if s.title == "Fastest backend per regime"][0]
    table = [b[1] for b in regimes.blocks if b[0] == "table"][0]
    assert set(table["model"]) == {"unidirectional", "bidirectional"} and "zipf:1.2" in set(table["lengths"])
    (gradients,) = [s for s in built["sections"] if s.title == "Gradient flow through time"]
    summary = [b[1] for b in gradients.blocks if b[0] == "table"][0]
    assert set(summary["model"]) == {"unidirectional", "bidirectional"}
    assert set(summary["decay_reverse"]) == {"", "-0.05"}  # the reverse profile's, for the bidirectional model
    assert sum(b[0] == "figure" for b in gradients.blocks) == 2  # one figure per model, both profiles in one
    assert "## Ragged batches" in built["md"].read_text()


def test_recommend_answers_for_the_model_and_lengths_asked(tmp_path):
    from rnnbench.recommend import recommend

    run, _ = _ragged_run(tmp_path)
    ragged_uni = recommend("lstm", 32, 128, "train", "cpu", hidden=128, lengths="zipf:1.2", results=[run.path])
    # padded per valid token: 1 us x T / mean length = 3.5 us, the eager loop's 3 us, packed 1 us
    assert ragged_uni.backend == "torch_cudnn" and ragged_uni.runner_up == "torch_eager"
    assert ragged_uni.relied_on[0]["torch_cudnn_padded"] > ragged_uni.relied_on[0]["torch_eager"]
    full = recommend("lstm", 32, 128, "train", "cpu", hidden=128, results=[run.path])
    assert full.backend is None and "within noise" in full.reason  # packed and padded do the same work
    bidirectional = recommend("lstm", 32, 128, "train", "cpu", hidden=128, bidirectional=True, lengths="zipf:1.2",
                              results=[run.path])
    assert bidirectional.backend == "torch_cudnn" and bidirectional.runner_up == "torch_eager"
    assert "bidirectional" in str(bidirectional) and "zipf:1.2" in str(bidirectional)


def test_torch_cudnn_labels_what_ran_on_a_cpu_packed_or_padded():
    """oneDNN's fused LSTM takes padded input only: ATen runs a packed batch with its own loop.  The label
    follows the profiler's record of the ops that ran, asked after the call."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from impls.spec import init_weights, make_inputs

    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without oneDNN")
    spec = RNNSpec("lstm", 8, 16)
    x, _, _ = make_inputs(spec, 10, 4)
    for lengths, label in ((None, "aten-onednn"), (np.array([10, 7, 3, 1]), "aten")):
        runner = impls.get("torch_cudnn").build(spec, init_weights(spec), "cpu", "float32")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            runner.forward(x, None, lengths=lengths)
        ran_onednn = any("mkldnn_rnn" in e.name for e in prof.events())
        assert (runner.impl_label(), ran_onednn) == (label, lengths is None)
