"""``recommend --measure``: every candidate backend for one exact configuration, measured here and now.

Timings taken one backend after another on a shared machine drift, so the
comparison is built to cancel drift: after each candidate passes a parity check
against the float64 oracle (at the query's batch and sizes, a short T) and is
compiled and warmed up (that cost is reported apart), the candidates are timed
in *rounds*, one call each, in a fresh shuffled order every round.  Each round
is watched by ``rnnbench.contention.Window``; a round in which others used more
than the threshold of cores is dropped, counted and replaced while the budget
lasts.  The winner (lowest median) is tested against the runner-up by a paired
Wilcoxon signed-rank test over the per-round log time ratios (two-sided, exact
for small n: 8 rounds are the fewest that can reach p < 0.01).  The test is
looked at after 8 rounds and then each time the count has grown by half
(8, 12, 18, 27, ...), so that repeated looks do not spend much of the error
rate; measuring stops when it passes or when the next round would overrun the
budget.  Margins over every other candidate are the median of the paired
per-round ratios (the statistic the signed-rank test is about; a mean is
pulled by a burst of load) with a bootstrap confidence interval.

The records go into a run folder like any run (``sweep.create_run``), one timing
record per measured candidate with its per-round times as ``samples_s``, so later
reports and plain ``recommend`` calls use them.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import MODES, ConfigError
from .suites import SETTINGS

CONFIDENCE = 0.95  # of the margins' bootstrap intervals
ROUNDS_SHARE = 0.4  # of the budget: once two candidates are ready, no other is set up in the last 40%
WRITE_SHARE = 0.15  # of the budget, kept for the answer (bootstrap) and the records after the last round
LOOK_GROWTH = 1.5  # the test is looked at when the clean rounds have grown by this factor


@dataclass
class Excluded:
    backend: str
    stage: str  # unavailable | unsupported | unranked | skipped | parity | error
    reason: str


@dataclass
class Margin:
    """Another candidate against the winner: its time over the winner's, per round."""

    backend: str
    median_s: float
    ratio: float  # median over rounds of (its time / the winner's)
    ci_low: float | None
    ci_high: float | None
    p_value: float | None  # two-sided Wilcoxon signed-rank over the rounds
    compile_s: float


@dataclass
class MeasuredRecommendation:
    query: dict
    backend: str | None  # the fastest candidate (None: nothing could be measured)
    separable: bool  # the winner beat the runner-up at p < p_threshold
    verdict: str  # one line: why it is (or is not) separable
    median_s: float | None = None
    tokens_per_s: float | None = None
    peak_bytes: int | None = None
    peak_method: str | None = None
    compile_s: float | None = None  # the winner's compile and warm-up before its first timed round
    impl_label: str | None = None
    margins: list = field(default_factory=list)  # Margin, one per other measured candidate, fastest first
    excluded: list = field(default_factory=list)  # Excluded
    rounds: int = 0  # rounds the answer rests on
    loaded_rounds: int = 0  # rounds dropped because others used the machine
    load_cores: float | None = None  # median of others' cores over every round
    contention_threshold: float = SETTINGS.contention_threshold  # a round above it is dropped
    under_load: bool = False  # no answer: load left fewer quiet rounds than the test needs (``no_answer_under_load``)
    threads: int = 0  # the intra-op thread limit it measured with (0: each framework's default)
    budget_s: float = 0.0
    wall_s: float = 0.0
    setup_s: float = 0.0  # imports, parity checks, builds, compiles and warm-ups, before the first round
    snippet: str = ""
    notes: list = field(default_factory=list)
    run_dir: Path | None = None

    @property
    def runner_up(self) -> str | None:
        return self.margins[0].backend if self.margins else None

    def table(self):
        """Every measured candidate, fastest first: median, tokens/s, ratio to the winner with its CI, p, compile."""
        import pandas as pd

        rows = []
        if self.backend is not None:
            rows.append({"backend": self.backend, "median_ms": self.median_s * 1e3, "tokens_per_s": self.tokens_per_s,
                         "ratio_to_winner": 1.0, "ci_low": None, "ci_high": None, "p_value": None,
                         "compile_s": self.compile_s})
        for m in self.margins:
            rows.append({"backend": m.backend, "median_ms": m.median_s * 1e3,
                         "tokens_per_s": self.tokens_per_s * self.median_s / m.median_s, "ratio_to_winner": m.ratio,
                         "ci_low": m.ci_low, "ci_high": m.ci_high, "p_value": m.p_value, "compile_s": m.compile_s})
        return pd.DataFrame(rows, columns=["backend", "median_ms", "tokens_per_s", "ratio_to_winner", "ci_low",
                                           "ci_high", "p_value", "compile_s"])

    def __str__(self) -> str:
        q = self.query
        lines = [f"query: {q['cell']} {q['mode']} B={q['batch']} T={q['seq_len']} I={q['input_size']} "
                 f"H={q['hidden']} layers={q['layers']}{' bidirectional' if q.get('bidirectional') else ''} "
                 f"{q['dtype']} on {q['device']}{f' --threads {self.threads}' if self.threads else ''} "
                 "(measured now, interleaved)"]
        lines += [f"excluded {e.backend}: {e.stage}: {e.reason}" for e in self.excluded]
        if self.backend is None:  # the answer's absence comes first
            return "\n".join([f"no answer: {self.verdict}", *lines] + [f"note: {n}" for n in dict.fromkeys(self.notes)])
        peak = f", peak {self.peak_bytes / 1e6:.3g} MB ({self.peak_method})" if self.peak_bytes is not None else \
            f"; peak memory {self.peak_method}"
        lines.append(("use: " if self.separable else "fastest (not separable): ") +
                     f"{self.backend} ({self.impl_label}): {self.median_s * 1e3:.4g} ms median, "
                     f"{self.tokens_per_s:.4g} tokens/s{peak}; compile and warm-up {self.compile_s:.3g} s")
        lines.append(self.verdict)
        if self.margins:
            lines.append(f"margins over {self.rounds} paired rounds (median of per-round time ratios, "
                         f"{CONFIDENCE:.0%} bootstrap CI; Wilcoxon signed-rank p):")
            table = self.table().assign(CI=lambda d: [
                "" if lo is None or lo != lo else f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(d["ci_low"], d["ci_high"])])
            table = table[["backend", "median_ms", "tokens_per_s", "ratio_to_winner", "CI", "p_value", "compile_s"]]
            lines += ["  " + s for s in table.to_string(index=False, float_format=lambda v: f"{v:.4g}",
                                                        na_rep="-").splitlines()]
        load = f", others used {self.load_cores:.2g} cores (median over rounds)" if self.load_cores is not None else ""
        lines.append(f"rounds: {self.rounds} used, {self.loaded_rounds} more dropped under load (threshold "
                     f"{self.contention_threshold:g} cores){load}")
        lines.append(f"time: {self.wall_s:.3g} s of a {self.budget_s:g} s budget ({self.setup_s:.3g} s of it "
                     f"parity checks, builds, compiles and warm-ups)")
        lines += [f"note: {n}" for n in dict.fromkeys(self.notes)]  # each once
        if self.snippet:
            lines += [f"how to use {self.backend} with your weights:"] + ["  " + s for s in self.snippet.splitlines()]
        if self.run_dir is not None:
            lines.append(f"records: {Path(self.run_dir) / 'records.jsonl'}")
        return "\n".join(lines)


# -- candidates ---------------------------------------------------------------------------------


def candidate_names(spec, mode: str, device: str, dtype: str, backends=None) -> tuple[list[str], list[Excluded]]:
    """The RNN backends that can run this configuration here, and the others with why not."""
    import impls
    from impls.runner import supports, timed

    names = impls.names(kind="rnn") if backends is None else list(backends)
    chosen, excluded = [], []
    for name in names:
        ok, reason = impls.available(name, device)
        if not ok:
            excluded.append(Excluded(name, "unavailable", reason))
            continue
        backend = impls.get(name)
        ok, reason = supports(backend, device, spec.cell, dtype=dtype, mode=mode,
                              features=("bidirectional",) if spec.bidirectional else ())
        if not ok:
            excluded.append(Excluded(name, "unsupported", reason))
            continue
        ok, reason = timed(backend, device, spec.cell)
        if not ok:
            excluded.append(Excluded(name, "unranked", reason))
            continue
        chosen.append(name)
    return chosen, excluded


@dataclass
class _Candidate:
    name: str
    prepared: object  # rnnbench.measure.Prepared at the query's shape
    setup_s: float  # the backend's own build, compile and warm-up time (parity stage included)
    y_err: float  # forward output against the oracle at T = conformance.PARITY_T: the record's max_rel_err
    last_s: float  # its second warm-up call: what the next round is expected to cost
    times: list = field(default_factory=list)  # one per clean round
    loaded_times: list = field(default_factory=list)  # one per dropped round
    all_times: list = field(default_factory=list)  # one per round, in the order they ran


def _setup(name, job, spec, weights, mode, tolerance, excluded, log) -> _Candidate | None:
    """Parity check, build at the query's shape, compile, two warm-up calls; None (and a reason) on failure."""
    import impls
    from impls.conformance import parity_error
    from impls.spec import Unsupported

    from .measure import Prepared, classify

    backend = impls.get(name)
    try:
        t0 = time.perf_counter()
        small = backend.build(spec, weights, job.device, job.dtype)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        error, worst = parity_error(small, spec, weights, mode, job.batch, seed=job.seed)
        parity_s = time.perf_counter() - t0  # the backend's calls and the oracle's (a small share at T = 8)
        if not error <= tolerance:  # NaN fails too
            excluded.append(Excluded(name, "parity", f"{worst} off the float64 oracle by {error:.3g} "
                                                     f"(tolerance {tolerance:g} in {job.dtype})"))
            return None
        y_err = parity_error(small, spec, weights, "forward", job.batch, seed=job.seed)[0] if mode == "train" else error
        del small
        t0 = time.perf_counter()
        p = Prepared(job, weights=weights)
        timer = p.timer()
        timer.time(p.fn)  # first call: jit, autotune, lazy init
        last_s = timer.time(p.fn)  # second warm-up
        setup_s = build_s + parity_s + time.perf_counter() - t0
    except Unsupported as exc:
        excluded.append(Excluded(name, "unsupported", str(exc)))
        return None
    except Exception as exc:  # noqa: BLE001 - a candidate that fails is named, the others go on
        excluded.append(Excluded(name, classify(exc), f"{type(exc).__name__}: {exc}"[:300]))
        return None
    log(f"  {name}: parity {error:.2g} ({worst}), ready in {setup_s:.3g} s")
    return _Candidate(name, p, setup_s, y_err, last_s)


# -- rounds and the decision --------------------------------------------------------------------


def _paired_p(t_winner, t_other) -> float | None:
    """Two-sided signed-rank p over the rounds (None with fewer than 8: p < 0.01 is out of reach)."""
    from .results import compare_paired_rounds

    return compare_paired_rounds(dict(enumerate(t_winner)), dict(enumerate(t_other))).p


def _ratio_ci(log_ratios, seed: int) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the median ratio (None with fewer than 3 rounds)."""
    from scipy.stats import bootstrap

    d = np.asarray(log_ratios, dtype=float)
    if len(d) < 3 or np.ptp(d) == 0:
        return (math.exp(d[0]),) * 2 if len(d) and np.ptp(d) == 0 else (None, None)
    res = bootstrap((d,), np.median, confidence_level=CONFIDENCE, method="percentile", n_resamples=2000,
                    rng=np.random.default_rng(seed))
    return math.exp(res.confidence_interval.low), math.exp(res.confidence_interval.high)


def _decide(cands: list[_Candidate]):
    """(winner, the others fastest first, per-candidate times used) from the clean rounds (loaded ones never decide)."""
    times = {c.name: np.asarray(c.times, dtype=float) for c in cands}  # paired by round
    order = sorted(cands, key=lambda c: float(np.median(times[c.name])))
    return order[0], order[1:], times


def _round(order) -> tuple[dict, float]:
    """One call of each candidate in ``order``: (their times, others' cores over the round)."""
    from .contention import Window

    times = {}
    with Window() as window:  # one window a round: reading /proc costs tens of ms on a busy machine
        for c in order:
            times[c.name] = c.prepared.timer().time(c.prepared.fn)
    return times, window.cores


def measure_interleaved(spec, weights, *, batch: int, seq_len: int, mode: str, device: str, dtype: str,
                        budget_s: float = 60.0, backends=None, out=None, machine: str | None = None,
                        results=("results", "results/runs"), source: str = "model", seed: int = 0,
                        contention_threshold: float = SETTINGS.contention_threshold, argv=None,
                        log=None, batch_first: bool = False, threads: int = 0) -> MeasuredRecommendation:
    """Every candidate for this exact configuration, measured interleaved within ``budget_s`` seconds.

    ``out``: a results root for a run folder of the records (None: nothing is written);
    ``batch_first``: the layout the printed snippet's batch takes, as the user's model does;
    ``threads``: intra-op threads of every framework (``impls.runtime.limit_threads``; 0: their defaults)."""
    import impls
    from impls.conformance import PARITY_T, TOLERANCE
    from impls.convert import usage_snippet

    from .results import recorded_cost_s, recorded_rows

    from .jobs import TimingJob
    from .sweep import create_run

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    start = time.perf_counter()
    deadline = start + budget_s
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    query = dict(cell=spec.cell, mode=mode, dtype=dtype, device=device, batch=batch, seq_len=seq_len,
                 input_size=spec.input_size, hidden=spec.hidden_size, layers=spec.num_layers,
                 bidirectional=spec.bidirectional)
    job_of = {}
    for name in impls.names(kind="rnn") if backends is None else backends:
        job = TimingJob(name, cell=spec.cell, layers=spec.num_layers, batch=batch, seq_len=seq_len,
                        input_size=spec.input_size, hidden=spec.hidden_size, dtype=dtype, mode=mode, device=device,
                        bidirectional=bool(spec.bidirectional), seed=seed, thread_limit=threads)
        job.validate()
        job_of[name] = job
    names, excluded = candidate_names(spec, mode, device, dtype, list(job_of))
    rec = MeasuredRecommendation(query, None, False, "", budget_s=budget_s, excluded=excluded,
                                 contention_threshold=contention_threshold, threads=threads)
    if threads:  # before any candidate is built: ONNX Runtime reads it at build, torch at once, XLA at start
        from impls.runtime import limit_threads

        rec.notes += [n for n in [limit_threads(threads)] if n]
    run = None if out is None else create_run([job_of[n] for n in names], [device], "inline", out, machine, argv)
    rec.run_dir = None if run is None else run.path  # made inside the budget
    tolerance = TOLERANCE[dtype]  # the parity check's: the conformance table (docs/design.md "Conformance")
    log(f"parity check at T={PARITY_T} and warm-up of {len(names)} candidates ({', '.join(names)})")
    recorded = {name: recorded_rows(results, name, query) for name in names}
    predicted = {name: recorded_cost_s(recorded[name], query) for name in names}
    cands = []
    # the cheapest (as recorded) first, so that a slow one cannot spend the others' budget
    for name in sorted(names, key=lambda n: predicted[n][0] if predicted[n][0] is not None else math.inf):
        left = deadline - time.perf_counter()
        need, what = predicted[name]
        if left <= 0 or (len(cands) >= 2 and left < ROUNDS_SHARE * budget_s):
            excluded.append(Excluded(name, "skipped", f"not set up: {max(left, 0):.3g} s of the budget were left after "
                                                      f"the others' set-up, kept for the rounds; a larger --budget-s "
                                                      f"includes it"))
            continue
        if need is not None and need > left:
            excluded.append(Excluded(name, "skipped", f"{what} in recorded runs: more than the {left:.3g} s of budget "
                                                      f"left; a larger --budget-s includes it"))
            continue
        cand = _setup(name, job_of[name], spec, weights, mode, tolerance, excluded, log)
        if cand is not None:
            cands.append(cand)
    rec.setup_s = time.perf_counter() - start
    if not cands:
        rec.verdict = "no candidate passed the parity check and warm-up"
        _write_records(run, [], excluded, job_of, rec, None, [], [])
        rec.wall_s = time.perf_counter() - start
        return rec

    rng = np.random.default_rng(seed)
    round_cores, round_loaded, next_look, decided = [], [], 8, False
    expected_s = sum(c.last_s for c in cands)
    # a round that would overrun is not started; the last WRITE_SHARE is for the answer and the records
    while time.perf_counter() + 1.2 * expected_s <= deadline - WRITE_SHARE * budget_s:
        order = [cands[i] for i in rng.permutation(len(cands))]
        times, cores = _round(order)
        expected_s = sum(times.values())
        loaded = cores > contention_threshold
        round_cores.append(cores)
        round_loaded.append(loaded)
        for c in cands:
            c.all_times.append(times[c.name])
            (c.loaded_times if loaded else c.times).append(times[c.name])
        clean = len(cands[0].times)
        if not loaded and clean >= next_look:
            next_look = math.ceil(clean * LOOK_GROWTH)
            if len(cands) == 1:  # nothing to compare with: 8 rounds give its median
                break
            winner, others, t = _decide(cands)
            p = _paired_p(t[winner.name], t[others[0].name])
            if p is not None and p < SETTINGS.p_threshold:
                decided = True
                break
    rec.loaded_rounds = len(cands[0].loaded_times)
    if not cands[0].times and not cands[0].loaded_times:
        rec.verdict = (f"not separable: no round fit the {budget_s:g} s budget after {rec.setup_s:.3g} s of set-up "
                       f"(parity checks, builds, compiles); a larger --budget-s would measure")
        _write_records(run, [], excluded, job_of, rec, None, [], [])
        rec.wall_s = time.perf_counter() - start
        return rec
    rec.load_cores = float(np.median(round_cores)) if round_cores else None
    verdict = no_answer_under_load(len(cands[0].times), rec.loaded_rounds, rec.load_cores, contention_threshold,
                                   budget_s, threads)
    if verdict:  # loaded rounds never decide a winner
        rec.verdict, rec.under_load = verdict, True
        _write_records(run, cands, excluded, job_of, rec, None, round_cores, round_loaded)
        rec.wall_s = time.perf_counter() - start
        return rec
    if rec.loaded_rounds and threads != 1:
        rec.notes.append(f"{rec.loaded_rounds} rounds were dropped under load: on a machine others use, "
                         "--threads 1 times every framework on one intra-op thread")
    winner, others, t = _decide(cands)
    rec.rounds = len(t[winner.name])
    _fill_answer(rec, winner, others, t, decided, seed)
    rec.snippet = usage_snippet(winner.name, winner.prepared.runner, spec, device, dtype, source, batch=batch,
                                seq_len=seq_len, batch_first=batch_first)
    _flag_compile(rec, winner, others, t)
    rec.peak_bytes, rec.peak_method = _peak(winner, recorded[winner.name], query)
    _write_records(run, cands, excluded, job_of, rec, winner, round_cores, round_loaded)
    rec.wall_s = time.perf_counter() - start
    return rec


QUIET_ROUNDS = 8  # the fewest paired rounds a two-sided signed-rank test can reach p < 0.01 with


def no_answer_under_load(quiet: int, loaded: int, load_cores: float | None, threshold: float, budget_s: float,
                         threads: int) -> str | None:
    """The verdict when others' load left fewer quiet rounds than the paired test needs (None otherwise):
    the load measured and what to do.  Rounds timed while others used the cores never decide a winner
    (on this 2-core VM torch's two threads with one core busy took 152 ms a call against 3.4 ms with one)."""
    if quiet >= QUIET_ROUNDS or not loaded:
        return None
    todo = ["on a quieter machine"] + ([] if threads == 1 else [
        "with --threads 1 (one intra-op thread for torch, XLA and ONNX Runtime: a busy core then stalls no "
        "thread pool)"]) + [f"with a larger --budget-s than {budget_s:g} (quiet rounds may come later)"]
    load = f"{load_cores:.2g} cores" if load_cores is not None else "the cores"
    return (f"others used {load} (median over {quiet + loaded} rounds): {loaded} round(s) above the {threshold:g}-core "
            f"threshold were dropped, leaving {quiet} quiet of the {QUIET_ROUNDS} the paired signed-rank test needs; "
            "loaded rounds never decide a winner. Measure again " + ", or ".join(todo))


def _fill_answer(rec, winner, others, t, decided: bool, seed: int) -> None:
    q = rec.query
    rec.backend = winner.name
    rec.impl_label = winner.prepared.runner.impl_label()
    rec.median_s = float(np.median(t[winner.name]))
    tokens = q["batch"] * (1 if q["mode"] == "step" else q["seq_len"])
    rec.tokens_per_s = tokens / rec.median_s
    rec.compile_s = winner.setup_s
    for c in others:
        d = np.log(t[c.name] / t[winner.name])
        low, high = _ratio_ci(d, seed)
        rec.margins.append(Margin(c.name, float(np.median(t[c.name])), float(math.exp(np.median(d))), low, high,
                                  _paired_p(t[winner.name], t[c.name]), c.setup_s))
    if not others:
        rec.separable, rec.verdict = True, "the only candidate that passed: nothing to compare with"
        return
    ru = rec.margins[0]
    if decided or (ru.p_value is not None and ru.p_value < SETTINGS.p_threshold):
        rec.separable = True
        rec.verdict = (f"{winner.name} beats the runner-up {ru.backend} by x{ru.ratio:.3g} (CI "
                       f"{_ci(ru)}; Wilcoxon signed-rank p = {ru.p_value:.2g} < {SETTINGS.p_threshold:g} over "
                       f"{rec.rounds} paired rounds)")
    elif ru.p_value is None:
        rec.verdict = (f"not separable: {rec.rounds} rounds fit the budget, fewer than the 8 a signed-rank test needs "
                       f"for p < {SETTINGS.p_threshold:g}; {ru.backend} is x{ru.ratio:.3g} the time of {winner.name} "
                       f"(CI {_ci(ru)}); a larger --budget-s would decide")
    else:
        rec.verdict = (f"not separable: {winner.name} and {ru.backend} are within x{ru.ratio:.3g} of each other "
                       f"(CI {_ci(ru)}; Wilcoxon signed-rank p = {ru.p_value:.2g} >= {SETTINGS.p_threshold:g} over "
                       f"{rec.rounds} paired rounds): either will do")


def _ci(m: Margin) -> str:
    return "n/a" if m.ci_low is None else f"{m.ci_low:.3g}-{m.ci_high:.3g}"


def _flag_compile(rec, winner, others, t) -> None:
    """A winner that compiles much longer than a close rival pays off only after many calls: say after how many."""
    cheaper = [c for c in others if c.setup_s + 1.0 < winner.setup_s]
    if not cheaper:
        return
    rival = min(cheaper, key=lambda c: float(np.median(t[c.name])))
    saved = float(np.median(t[rival.name]) - np.median(t[winner.name]))
    extra = winner.setup_s - rival.setup_s
    calls = extra / saved if saved > 0 else math.inf
    rec.notes.append(f"short jobs: {winner.name}'s compile and warm-up took {winner.setup_s:.3g} s, {extra:.3g} s more "
                     f"than {rival.name}'s; saving {saved * 1e3:.3g} ms a call, it pays that back after {calls:.0f} "
                     f"calls ({calls * rec.median_s:.3g} s of work): for a shorter job use {rival.name}")


def _peak(winner, rows, query: dict) -> tuple[int | None, str]:
    """The winner's peak memory of one call: by its runner's probe where that runs in this process (CUDA);
    else as recorded at this shape (a CPU's probe needs a fresh process that preloads every framework,
    seconds to a minute on a busy machine, more than a budget of rounds can give)."""
    p = winner.prepared
    if p.memory_probe.in_process:
        return p.peak_memory(fresh_process=False)
    from .results import recorded_peak

    peak, how = recorded_peak(rows, query)
    if peak is None:
        how = (f"not measured here (a fresh process per configuration): rnnbench run --backends {winner.name} "
               f"--cells {query['cell']} --mode {query['mode']} --batch {query['batch']} --seq-len {query['seq_len']} "
               f"--input-size {query['input_size']} --hidden {query['hidden']} measures it")
    return peak, how


def _write_records(run, cands, excluded, job_of, rec, winner, round_cores, round_loaded) -> None:
    """Per measured candidate one timing record per round (``round`` i, its one call as ``samples_s``,
    the round's contention; rounds dropped under load are kept with ``contended: true``), as the
    rounds of a sweep are; one failure record per candidate excluded by the parity check or an error."""
    from dataclasses import replace

    from . import cost
    from .measure import base_record, failure_record

    if run is None:  # no out= given: nothing is written
        return
    run.update_info(interleaved={"rounds": rec.rounds, "loaded_rounds": rec.loaded_rounds, "budget_s": rec.budget_s,
                                 "winner": rec.backend, "separable": rec.separable, "verdict": rec.verdict})
    ceilings = run.info.get("ceilings")
    tokens = rec.query["batch"] * (1 if rec.query["mode"] == "step" else rec.query["seq_len"])
    for c in cands:
        p = c.prepared
        costs = cost.record_cost(p.cfg, p.kind, getattr(p.runner, "dims", None))
        for i, (seconds, cores, loaded) in enumerate(zip(c.all_times, round_cores, round_loaded)):
            job = replace(p.cfg, round=i)
            r = {**base_record(job), **p.base_fields(), "compile_s": c.setup_s if i == 0 else None,
                 "median_s": seconds, "iqr_s": 0.0, "samples_s": [seconds], "repeats": 1,
                 "contention": cores, "contended": bool(loaded), "tokens_per_s": tokens / seconds,
                 "max_rel_err": c.y_err if i == 0 else None,
                 "peak_bytes": rec.peak_bytes if c is winner and i == 0 else None,
                 "peak_method": rec.peak_method if c is winner else "not probed (interleaved: the winner only)",
                 "interleaved": True, **costs}
            run.append(cost.complete(r, ceilings))
    for e in excluded:
        if e.stage in ("parity", "error"):
            run.append(failure_record(job_of[e.backend], "error", f"{e.stage}: {e.reason}"))


def recommend_for(model, batch: int, seq_len: int, mode: str = "train", device: str | None = None,
                  budget_s: float = 60.0, dtype: str | None = None, **options) -> MeasuredRecommendation:
    """The fastest backend for ``model`` (a torch.nn.LSTM / GRU / RNN), measured here with its own weights.

    Sizes, layers, bidirectional and weights are read from the module (``impls.convert``); device and
    dtype default to its parameters'; the printed snippet takes a batch laid out as the module's
    ``batch_first`` says.  Nothing is written unless ``out`` (a results root) is given.  ``options`` go
    to ``measure_interleaved`` (``backends``, ``out``, ``results``, ``threads``: one intra-op thread count
    for every framework, ...).  Under load it answers ``backend=None``, ``under_load=True``, and its first
    line says ``no answer:`` with what to do.  A module the suite cannot reproduce raises
    ``impls.convert.Unconvertible`` (a ValueError) naming the attribute.
    """
    from impls.convert import from_torch_module
    from impls.runtime import prepare_process

    prepare_process()  # as the CLI does first: Triton's interpreter is chosen before triton is imported
    spec, weights, model_dtype = from_torch_module(model)
    if device is None:
        where = next(model.parameters()).device
        device = where.type if where.index is None or where.type == "cpu" else f"{where.type}:{where.index}"
    return measure_interleaved(spec, weights, batch=batch, seq_len=seq_len, mode=mode, device=device,
                               dtype=dtype or model_dtype, budget_s=budget_s, source="model",
                               batch_first=bool(getattr(model, "batch_first", False)), **options)


def recommend_measured(cell: str | None, batch: int, seq_len: int, mode: str, device: str, *,
                       input_size: int | None = None, hidden: int | None = None, layers: int = 1,
                       dtype: str = "float32", budget_s: float = 60.0, state_dict_file: str | None = None,
                       backends=None, **options) -> MeasuredRecommendation:
    """The CLI's ``recommend --measure``: the model from a saved state dict (``cell`` None: the state
    dict's), or seeded weights of the given sizes; every input checked (ConfigError naming the valid
    choices) before anything is written."""
    import impls
    from impls.convert import Unconvertible, from_state_dict, load_state_dict
    from impls.spec import CELLS, DTYPES, RNNSpec, init_weights

    from .config import check_devices

    for label, value, valid in (("cell", cell, CELLS), ("mode", mode, MODES), ("dtype", dtype, DTYPES)):
        if value not in valid and not (label == "cell" and value is None and state_dict_file is not None):
            raise ConfigError(f"unknown {label} {value!r}; valid: {', '.join(valid)}")
    check_devices([device])
    if not (isinstance(budget_s, (int, float)) and budget_s > 0 and math.isfinite(budget_s)):
        raise ConfigError(f"--budget-s must be a positive number of seconds, got {budget_s!r}")
    for name in backends or ():
        if name not in impls.names(kind="rnn"):
            raise ConfigError(f"unknown RNN backend {name!r}; valid: {', '.join(impls.names(kind='rnn'))}")
    if state_dict_file is not None:
        try:
            spec, weights = from_state_dict(load_state_dict(state_dict_file), cell=cell)
        except (OSError, Unconvertible, RuntimeError) as exc:
            raise ConfigError(f"--from-state-dict {state_dict_file}: {exc}") from None
        for flag, given, found in (("--input-size", input_size, spec.input_size), ("--hidden", hidden, spec.hidden_size),
                                   ("--layers", layers if layers != 1 else None, spec.num_layers)):
            if given is not None and given != found:
                raise ConfigError(f"{flag} {given} disagrees with the state dict's {found}")
        source = state_dict_file
    else:
        if hidden is None:
            raise ConfigError("--measure needs --hidden (the exact configuration; --input-size defaults to it), "
                              "or --from-state-dict FILE")
        spec = RNNSpec(cell, input_size or hidden, hidden, layers)
        weights = init_weights(spec, seed=0)
        source = "model"
    return measure_interleaved(spec, weights, batch=batch, seq_len=seq_len, mode=mode, device=device, dtype=dtype,
                               budget_s=budget_s, backends=backends, source=source, **options)
