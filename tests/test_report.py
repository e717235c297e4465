"""rnnbench report: every file and figure from a synthetic result set, absent data said aloud, a
self-contained HTML page whose images decode, two-run comparisons that flag only significant
changes, and pytest-benchmark JSON read into the records' table."""
import base64
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from rnnbench import cli, report, results, store
from rnnbench.store import Run
from rnnbench.suites import SETTINGS

from .synthetic_results import make_run, timing_record

SMALL = dict(cells=("lstm",), modes=("forward", "train"), batch=(16, 64), seq_len=(16, 64), hidden=(64,))
FIGURE_KINDS = ("throughput", "memory", "speedup", "gradient", "training", "efficiency", "quality_first_steps",
                "depth")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run = make_run(root, shapes=SMALL, efficiency=True)
    out = root / "report"
    path = report.write_report([run.path], out)
    return path, out


def png_decodes(data: bytes) -> tuple:
    import matplotlib.image

    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return matplotlib.image.imread(io.BytesIO(data), format="png").shape


def test_report_writes_every_file_and_figure(written):
    path, out = written
    assert path == out / "report.html" and path.is_file() and (out / "report.md").is_file()
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    for kind in FIGURE_KINDS:
        assert [f for f in figures if f.startswith(kind + "_")], (kind, figures)
    md = (out / "report.md").read_text()
    for name in figures:  # each figure is in the report, and each one the report names exists
        assert f"(figures/{name})" in md
    for p in (out / "figures").glob("*.png"):
        height, width, _ = png_decodes(p.read_bytes())
        assert height > 100 and width > 100
    for title in ("Runs", "Fastest backend per regime", "Throughput vs sequence length", "Peak memory vs sequence",
                  "Speedup over torch_cudnn", "Gradient flow", "Training curves", "Time to quality", "Memory depth", "Efficiency",
                  "Failures"):
        assert f"## {title}" in md
    assert "No data" not in md and "Not recorded" not in md
    assert "out of memory" in md  # the failed record is listed, not plotted
    assert "Triton under its interpreter (triton_fused)" in md
    assert "synthbox" in md and "2.13.0" in md  # the run's machine and versions in the header


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.external = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.srcs.append(attrs.get("src", ""))
        if tag in ("script", "link") and (attrs.get("src") or attrs.get("href")):
            self.external.append(tag)


def test_html_is_self_contained_and_every_image_decodes(written):
    path, out = written
    parser = Images()
    parser.feed(path.read_text())
    assert not parser.external
    assert len(parser.srcs) == len(list((out / "figures").glob("*.png")))
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,")
        png_decodes(base64.b64decode(src.split(",", 1)[1], validate=True))


BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


# In CI (.ci/run installs Chromium and sets RNNBENCH_REQUIRE_BROWSER=1) a missing browser fails instead of skipping.
NEEDS_BROWSER = pytest.mark.skipif(BROWSER is None and not os.environ.get("RNNBENCH_REQUIRE_BROWSER"),
                                   reason="no headless Chromium (apt-get install chromium)")
# What the page reports about itself once loaded: its images and its sections (h2 to the next h2).
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0 && i.width > 0));
  const bad = [];
  for (const h of document.querySelectorAll('h2')) {
    let blocks = 0, n = h.nextElementSibling;
    for (; n && n.tagName !== 'H2'; n = n.nextElementSibling) {
      if (n.tagName === 'TABLE' && !n.querySelector('tbody tr')) bad.push(h.textContent + ': empty table');
      if ((n.innerText || '').trim() || n.querySelector('img')) blocks++;
    }
    if (!blocks) bad.push(h.textContent + ': empty');
  }
  const sections = document.querySelectorAll('h2').length;
  document.title = `images=${imgs.length} broken=${broken.length} sections=${sections} bad=[${bad.join('; ')}]`;
});</script>"""


def chromium(*args, profile):
    """Headless Chromium with a fresh profile and nothing that reaches the network."""
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180)


@NEEDS_BROWSER
def test_html_loads_in_a_headless_browser(written, tmp_path):
    """Chromium opens the page: every figure decodes with a size, no section is empty or broken; a screenshot."""
    assert BROWSER is not None, "RNNBENCH_REQUIRE_BROWSER is set but no Chromium is installed"
    path, out = written
    page = tmp_path / "probe.html"
    page.write_text(path.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", page.as_uri(), profile=tmp_path / "profile1").stdout
    n = len(list((out / "figures").glob("*.png")))
    sections = path.read_text().count("<h2>")
    assert n > 0 and sections >= 9
    assert f"<title>images={n} broken=0 sections={sections} bad=[]</title>" in dom, dom[:2000]
    shot = tmp_path / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,4000", "--hide-scrollbars", path.as_uri(),
             profile=tmp_path / "profile2")
    height, width, _ = png_decodes(shot.read_bytes())
    assert (width, height) == (1400, 4000)


def test_absent_data_is_said_not_dropped(tmp_path):
    """One backend at one T: every section stays and says what is missing; no figure is drawn."""
    run = Run.create(tmp_path, "lonely", {})
    run.append(timing_record("torch_eager", "lstm", "forward", 8, 16, 32, 0.01, np.random.default_rng(0)))
    out = tmp_path / "report"
    report.write_report([run.path], out)
    md = (out / "report.md").read_text()
    assert not list((out / "figures").glob("*.png"))
    for said in ("**Fastest backend per regime**: not measured: the fastest backend needs timings of at least two",
                 "**Throughput vs sequence length**: not measured: no finished timings at two or more sequence",
                 "**Peak memory vs sequence length**: not measured: no peak-memory measurements at two or more",
                 "**Speedup over torch_cudnn**: not measured: no timing of torch_cudnn beside another backend",
                 "**Gradient flow through time**: not measured: these runs hold no stability records",
                 "**Training curves**: not measured: these runs hold no training records",
                 "**Efficiency**: not measured: these runs' records carry no cost fields",
                 "**Time to quality**: not measured: no training run with a quality target",
                 "**Memory depth**: not measured: no memory-depth walk"):
        line = next(line for line in md.splitlines() if line.startswith(said.split(":")[0]))
        assert line.startswith(said), line  # one line saying why, in place of a heading
        assert f"## {said.split('**')[1]}" not in md
    html = (out / "report.html").read_text()
    assert '<p class="absent"><b>Throughput vs sequence length</b>: not measured' in html
    assert "figure img{width:100%" in html  # figures at the page's width (the browser test measures a page)


@pytest.mark.parametrize("what, says", [
    ({"contended": True, "contention": 1.5}, "contended: every finished timing (4) was measured while others used"),
    ({"status": "unsupported", "message": "no such kernel"}, "unsupported: every timing record is unsupported"),
    ({"status": "oom", "message": "out of memory"}, "no timing record finished (4 oom;")])
def test_a_section_without_data_says_why(tmp_path, what, says):
    """Records that exist but cannot be shown: the line says they were contended, unsupported or failed."""
    run = Run.create(tmp_path, "box", {})
    rng = np.random.default_rng(0)
    for backend in ("torch_eager", "torch_cudnn"):
        for t in (16, 64):
            run.append({**timing_record(backend, "lstm", "forward", 8, t, 32, 0.01, rng), **what})
    out = tmp_path / "report"
    report.write_report([run.path], out)
    md = (out / "report.md").read_text()
    for title in ("Fastest backend per regime", "Throughput vs sequence length", "Speedup over torch_cudnn"):
        assert f"**{title}**: {says}" in md, md


def test_heatmap_and_regime_table_agree_on_one_ratio_and_one_colour_scale(tmp_path):
    """The same pair over the same configurations gives the same number in the speedup heatmap and in the
    regime table (ratio of per-configuration medians over rounds, geometric mean over T), written alike
    (``fmt_ratio``: 128x, never 1.3e+02x);
    two runs' heatmaps share one colour scale; a backend fastest nowhere is no regime's winner."""
    from rnnbench.report.figures import Figures
    from rnnbench.report.sections import regime_section, speedup_section

    rng = np.random.default_rng(0)
    runs = []
    for machine, factor in (("fast", 64.0), ("slow", 8.0)):  # torch_eager/torch_cudnn: x64 on one, x8 on the other
        run = Run.create(tmp_path / "runs", machine, {})
        for t in (16, 128):
            for k, level in enumerate((1, 2, 8)):  # a burst in round 2: a mean of per-round ratios says 2.52x
                run.append(timing_record("torch_cudnn", "lstm", "forward", 8, t, 32, 0.001 * t, rng, round=k))
                run.append(timing_record("torch_eager", "lstm", "forward", 8, t, 32, factor * 0.001 * t * level,
                                         rng, round=k))
        runs.append(run.path)
    df = results.load_inputs(runs)
    table = regime_section(df).blocks[0][1]
    speed = results.speed_rows(df)
    heat_text = speedup_section(df, Figures(tmp_path / "r", df["backend"].unique()), True)
    for machine, run_path in zip(("fast", "slow"), runs):
        one = speed[speed["machine"] == machine]
        times = one.groupby(["backend", "seq_len"])["median_s"].median().unstack("backend")  # medians over rounds
        expected = results.geometric_mean(times["torch_eager"] / times["torch_cudnn"])
        row = table[table["run"] == one["run_id"].iloc[0]].iloc[0]
        assert (row["fastest"], row["runner-up"], row["fastest in"]) == ("torch_cudnn", "torch_eager", "2 of 2")
        assert row["margin"] == results.fmt_ratio(expected)
    text = " ".join(b[1] for b in heat_text.blocks if b[0] == "text")
    assert results.RATIO_RULE in text and results.RATIO_RULE in " ".join(
        b[1] for b in regime_section(df).blocks if b[0] == "text")
    assert "One colour scale for every heatmap of this report" in text
    figures = [b for b in heat_text.blocks if b[0] == "figure"]
    assert len(figures) == 2
    lim = float(text.split(" to ")[1].split("x")[0])
    assert lim == pytest.approx(2 * 64, rel=0.02)  # the larger run's speedup (medians: x2 x64) sets both scales
    assert row["margin"] == results.fmt_ratio(expected) and expected == pytest.approx(2 * 8, rel=0.03)


def test_no_regime_winner_is_a_backend_fastest_nowhere(tmp_path):
    """my_lstm is second everywhere, by a hair, while the fastest backend swaps: on the geometric mean it
    is closest to the fastest, yet it won nothing, so it is not named fastest."""
    rng = np.random.default_rng(0)
    run = Run.create(tmp_path, "box", {})
    for t, (a, b) in zip((16, 32), ((1.0, 1.5), (1.5, 1.0))):
        for name, seconds in (("torch_eager", a), ("torch_cudnn", b), ("my_lstm", 1.01 * min(a, b) + 0.001)):
            run.append(timing_record(name, "lstm", "forward", 8, t, 32, seconds * 0.01, rng, noise=0.0))
    table, _ = results.regime_table(results.load_inputs([run.path]))
    (row,) = table.to_dict("records")
    assert row["fastest"] != "my_lstm" and row["fastest in"] == "1 of 2", row


def test_failures_are_listed_once_per_reason_with_their_shapes_and_count(tmp_path):
    import pandas as pd

    from rnnbench.report.sections import failures_section

    rng = np.random.default_rng(0)
    bad = [{**timing_record("flax_gru", "lstm", "train", b, t, 64, 0.01, rng, round=k), "status": "unsupported",
            "message": "flax_gru runs gru cells only", "median_s": None} for b in (16, 64) for t in (32, 256)
           for k in range(5)]
    oom = {**timing_record("torch_eager", "lstm", "train", 64, 256, 256, 0.01, rng), "status": "oom",
           "message": "out of memory", "median_s": None}
    ok = timing_record("torch_cudnn", "lstm", "train", 16, 32, 64, 0.01, rng)
    df = results.with_axis_defaults(pd.DataFrame([{**r, "run_id": "r"} for r in [*bad, oom, ok]]))
    section = failures_section(df)
    (table,) = [b[1] for b in section.blocks if b[0] == "table"]
    assert len(table) == 2  # 21 records, two reasons
    row = table.set_index("backend").loc["flax_gru"]
    assert (row["records"], row["B"], row["T"], row["H"]) == ("20", "16/64", "32/256", "64")  # as the report prints
    assert table.set_index("backend").loc["torch_eager", "status"] == "oom"
    assert any("21 record(s) did not finish, for 2 reason(s)" in b[1] for b in section.blocks if b[0] == "text")


def test_a_run_without_records_still_gets_a_report(tmp_path):
    run = Run.create(tmp_path, "empty", {})
    out = tmp_path / "report"
    report.write_report([run.path], out)
    md = (out / "report.md").read_text()
    assert "No records in the inputs" in md and "**Throughput vs sequence length**: not measured: these runs hold no" in md


def test_compare_rounds_is_a_rank_test_on_round_medians_and_a_factor():
    rng = np.random.default_rng(0)
    a = 1.0 + 0.01 * rng.standard_normal(6)  # [rounds]: one median per round
    slower = results.compare_rounds(a, 1.3 * (1.0 + 0.01 * rng.standard_normal(6)))
    assert slower.significant and slower.verdict.startswith("slower x1.") and slower.p < SETTINGS.p_threshold
    small = results.compare_rounds(a, 1.05 * (1.0 + 0.01 * rng.standard_normal(6)))
    assert small.p < SETTINGS.p_threshold and not small.significant  # real, but under the factor
    noise = results.compare_rounds(a, 1.0 + 0.01 * rng.standard_normal(6))
    assert not noise.significant and noise.verdict == ""
    few = results.compare_rounds([1.0, 1.01, 0.99, 1.0], [2.0, 2.01, 1.99, 2.0, 2.02])  # 4 rounds: p >= 0.016
    assert few.p is None and not few.significant and few.verdict == "too few rounds"


def test_compare_paired_rounds_needs_eight_pairs():
    a = {r: 1.0 + 0.001 * r for r in range(8)}
    faster = results.compare_paired_rounds(a, {r: 0.9 * v for r, v in a.items()})
    assert faster.significant and faster.ratio == pytest.approx(0.9) and faster.p < SETTINGS.p_threshold
    seven = results.compare_paired_rounds(a, {r: 0.5 * v for r, v in a.items() if r < 7})  # pairs, not rounds
    assert seven.p is None and seven.verdict == "too few rounds"
    rng = np.random.default_rng(1)
    noise = results.compare_paired_rounds(a, {r: v * (1 + 0.01 * rng.standard_normal()) for r, v in a.items()})
    assert not noise.significant


def test_two_identical_runs_are_not_different_though_their_samples_are():
    """Each round's level moves 3% (another process), its samples 0.3%: a rank test on the samples of
    one round flags run-to-run noise, the test on round medians does not."""
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(3)

    def run():  # [rounds, samples]
        return np.exp(0.03 * rng.standard_normal((5, 1))) * np.exp(0.003 * rng.standard_normal((5, 20)))

    a, b = run(), run()
    assert mannwhitneyu(a[0], b[0]).pvalue < 0.01  # what the old rule saw
    assert not results.compare_rounds(np.median(a, axis=1), np.median(b, axis=1), factor=1.0).significant


def test_two_runs_flag_only_significant_changes(tmp_path):
    a = make_run(tmp_path, shapes=SMALL, seed=1, extras=False, rounds=5)
    b = make_run(tmp_path, shapes=SMALL, seed=2, extras=False, slower={"torch_eager": 1.3, "jax_scan": 1.04}, rounds=5)
    section = report.sections.comparison_section(results.load_inputs([a.path, b.path]))
    table = next(block[1] for block in section.blocks if block[0] == "table")
    flagged = table[table["change"] != ""]
    assert set(flagged["backend"]) == {"torch_eager"} and len(flagged) == len(table[table["backend"] == "torch_eager"])
    assert all(v.startswith("slower x1.") for v in flagged["change"])
    assert section.summary.endswith("8 significantly slower in B, 0 significantly faster.")
    assert "Every row: device=cpu, dtype=float32, cell=lstm, layers=1, I=32, H=64." in \
        [block[1] for block in section.blocks if block[0] == "text"]


def test_cli_report_of_two_runs_prints_the_changes(tmp_path, capsys):
    shapes = dict(cells=("gru",), modes=("forward",), batch=(16, 64), seq_len=(16,), hidden=(64,))
    a = make_run(tmp_path, shapes=shapes, seed=1, extras=False, backends=("torch_cudnn", "torch_eager"), rounds=5)
    b = make_run(tmp_path, shapes=shapes, seed=2, extras=False, backends=("torch_cudnn", "torch_eager"),
                 slower={"torch_cudnn": 0.5}, rounds=5)
    assert cli.main(["report", str(a.path), str(b.path), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'cmp' / 'report.html'}" in out
    assert "4 configurations in both runs: 0 significantly slower in B, 2 significantly faster." in out
    assert "## Comparison of two runs" in (tmp_path / "cmp" / "report.md").read_text()


BENCH = textwrap.dedent("""
    import pytest

    @pytest.mark.parametrize("backend,seq_len", [("torch_cudnn", 16), ("torch_cudnn", 64),
                                                 ("torch_eager", 16), ("torch_eager", 64)])
    def test_bench(benchmark, backend, seq_len):
        benchmark.extra_info.update(backend=backend, framework="torch", impl_label="aten", device="cpu",
                                    dtype="float32", cell="lstm", layers=1, batch=4, seq_len=seq_len,
                                    input_size=8, hidden=8, mode="forward", threads=1)
        benchmark(lambda: sum(range(50 * seq_len)))

    def test_unrelated(benchmark):
        benchmark(lambda: None)
""")


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory):
    """A real ``pytest --benchmark-json`` file with extra_info as tests/bench writes it."""
    d = tmp_path_factory.mktemp("bench")
    (d / "test_tiny_bench.py").write_text(BENCH)
    out = d / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(d),
                           "-c", "/dev/null", str(d / "test_tiny_bench.py"), "--benchmark-enable",
                           f"--benchmark-json={out}", "--benchmark-save-data", "--benchmark-min-rounds=5",
                           "--benchmark-max-time=0.02", "--benchmark-warmup=off"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_pytest_benchmark_json_reads_into_the_records_table(bench_json, tmp_path):
    df = results.load_inputs([bench_json])
    raw = {b["extra_info"].get("backend", "") + str(b["extra_info"].get("seq_len")): b
           for b in json.loads(bench_json.read_text())["benchmarks"]}
    assert len(df) == 4  # the benchmark without extra_info is not rnnbench's
    for _, row in df.iterrows():
        stats = raw[row["backend"] + str(row["seq_len"])]["stats"]
        assert row["median_s"] == stats["median"] and row["iqr_s"] == stats["iqr"]
        assert len(row["samples_s"]) == stats["rounds"] >= 5
        assert row["tokens_per_s"] == pytest.approx(4 * row["seq_len"] / stats["median"])
        assert (row["kind"], row["status"], row["cell"], row["mode"], row["device"]) == \
            ("timing", "ok", "lstm", "forward", "cpu")
    assert df["run_id"].unique().tolist() == ["pytest-benchmark:bench"]
    out = tmp_path / "from_json"
    assert cli.main(["report", str(bench_json), "--out", str(out)]) == 0
    names = {p.name.split("_")[0] for p in (out / "figures").glob("*.png")}
    assert {"throughput", "speedup"} <= names


@pytest.mark.parametrize("make_bad", [
    lambda tmp: tmp / "missing",
    lambda tmp: (tmp / "empty").mkdir() or tmp / "empty",  # a folder holding no run
    lambda tmp: (tmp / "x.json").write_text('{"not": "pytest-benchmark"}') and tmp / "x.json",
])
def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, make_bad):
    bad = make_bad(tmp_path)
    assert cli.main(["report", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert "run folder" in err or "pytest-benchmark" in err
    assert not (tmp_path / "out").exists()


def test_run_ends_by_writing_its_report(tmp_path, capsys):
    argv = ["run", "--backends", "torch_cudnn", "--cells", "gru", "--batch", "2", "--seq-len", "4", "--hidden", "4",
            "--input-size", "4", "--mode", "forward", "--out", str(tmp_path), "--quiet"]
    assert cli.main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("report: ")]
    path = Path(lines[-1].split(" ", 1)[1])
    assert path.name == "report.html" and path.parent.name == "report" and path.is_file()
    assert path.parent.parent.parent.parent == tmp_path  # ROOT/<machine>/<run-id>/report/


def test_pytest_benchmark_runs_are_one_round_and_never_flagged(bench_json, tmp_path):
    """A pytest-benchmark file is one process, one round: ratios are shown, nothing is flagged."""
    data = json.loads(bench_json.read_text())
    for bench in data["benchmarks"]:
        del bench["stats"]["data"]
        bench["stats"]["median"] *= 2
    stripped = tmp_path / "stripped.json"
    stripped.write_text(json.dumps(data))
    section = report.sections.comparison_section(results.load_inputs([bench_json, stripped]))
    table = next(block[1] for block in section.blocks if block[0] == "table")
    assert set(table["change"]) == {"too few rounds"} and len(table) == 4
    assert section.summary.endswith("0 significantly slower in B, 0 significantly faster.")


def _model_winners(shapes):
    """The regime table's answers from the cost model alone (no noise): per cell, mode and T range,
    the backend with the least geometric mean of time over the fastest, and its margin."""
    from .synthetic_results import COST, model_seconds

    rnns = [b for b, (kind, *_) in COST.items() if kind == "rnn"]
    answers = {}
    for cell in shapes["cells"]:
        for mode in shapes["modes"]:
            for short in (True, False):
                ts = [t for t in shapes["seq_len"] if (t <= SETTINGS.short_t_max) == short]
                if not ts:
                    continue
                configs = [(b, t, h) for b in shapes["batch"] for t in ts for h in shapes["hidden"]]
                times = np.array([[model_seconds(k, cell, mode, b, t, h) for k in rnns] for b, t, h in configs])
                score = np.exp(np.log(times / times.min(axis=1, keepdims=True)).mean(axis=0))
                best, second = np.argsort(score)[:2]
                margin = float(np.exp(np.log(times[:, second] / times[:, best]).mean()))
                answers[(cell, mode, "short" if short else "long")] = (rnns[best], rnns[second], margin)
    return answers


def test_regime_winners_and_margins_are_the_cost_models(tmp_path):
    from .synthetic_results import SHAPES

    run = make_run(tmp_path, extras=False)
    table, reason = results.regime_table(results.load_inputs([run.path]))
    assert reason is None
    found = {(r["cell"], r["mode"], r["T range"].split()[0]): (r["fastest"], r["runner-up"],
             float(r["margin"].rstrip("x"))) for _, r in table.iterrows()}
    expected = _model_winners(SHAPES)
    assert set(found) == set(expected)
    for regime, (best, second, margin) in expected.items():
        assert found[regime][:2] == (best, second), regime
        assert found[regime][2] == pytest.approx(margin, rel=0.03), regime  # 2% noise on each sample's time
    md_path = tmp_path / "report"
    report.write_report([run.path], md_path)
    md = (md_path / "report.md").read_text()
    for best, _, _ in expected.values():  # the report's table names each regime's winner
        assert f"| {best} " in md


def _flagged(section):
    table = next(block[1] for block in section.blocks if block[0] == "table")
    return table[table["change"] != ""]


def test_machine_drift_is_measured_from_calibrations_and_no_change_within_it_is_flagged(tmp_path):
    """B ran on a machine 1.25x slower (every backend and the calibration workload), and torch_eager is
    1.6x slower besides: only torch_eager is flagged, and the section states the drift it used."""
    a = make_run(tmp_path, shapes=SMALL, seed=1, extras=False, rounds=5, machine_speed=1.0)
    b = make_run(tmp_path, shapes=SMALL, seed=2, extras=False, rounds=5, machine_speed=1.25,
                 slower={"torch_eager": 1.6})
    df = results.load_inputs([a.path, b.path])
    drift = results.machine_drift(*(results.calibration_rows(df)[lambda d, r=r: d["run_id"] == r.run_id]
                                    for r in (a, b)))
    assert drift.factor == pytest.approx(1.25, rel=0.03) and drift.processes == (20, 20)
    section = report.sections.comparison_section(df)
    assert set(_flagged(section)["backend"]) == {"torch_eager"}
    assert section.summary.startswith("flagged beyond x1.3") and "machine drift: x1.2" in section.summary
    # the same runs without their calibration records: the machine's drift reads as a change of every backend
    for run in (a, b):
        records = run.path / store.RECORDS
        records.write_text("".join(line + "\n" for line in records.read_text().splitlines()
                                   if '"calibration"' not in line))
    blind = report.sections.comparison_section(results.load_inputs([a.path, b.path]))
    assert set(_flagged(blind)["backend"]) == set(_flagged(section)["backend"]) | {"torch_cudnn", "jax_scan",
                                                                                 "transformer_sdpa"}
    assert "machine drift not known" in blind.summary


def test_agreeing_calibrations_are_no_drift():
    import pandas as pd

    from .synthetic_results import calibration_record

    rng = np.random.default_rng(0)
    a, b = (pd.DataFrame([calibration_record("x", r, 1.0, rng) for r in range(8)]) for _ in range(2))
    drift = results.machine_drift(a, b)
    assert drift.factor == 1.0 and drift.describe().startswith("machine drift: none")
    few = results.machine_drift(a.iloc[:2], b.iloc[:2].assign(calibration_loop_s=lambda d: d["calibration_loop_s"] * 1.3))
    assert few.factor == pytest.approx(1.3, rel=0.1)  # too few to test: a difference is counted, never ignored
    assert results.machine_drift(a, a.iloc[:0]) is None


def test_report_says_first_when_contention_removed_records(tmp_path, capsys):
    tiny = dict(shapes=dict(cells=("gru",), modes=("forward",), batch=(16,), seq_len=(16,), hidden=(64,)),
                extras=False, rounds=5, backends=("torch_cudnn", "torch_eager"))
    a, b = make_run(tmp_path, seed=1, **tiny), make_run(tmp_path, seed=2, **tiny)
    records = b.path / store.RECORDS
    records.write_text(records.read_text().replace('"contended": false', '"contended": true'))
    assert cli.main(["report", str(a.path), str(b.path), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("note: contention removed 10 of 20 timing records") and f"run {b.run_id} (10 of 10)" in out[0]
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert md.index("Contention removed 10 of 20") < md.index("**Comparison of two runs**: not comparable")
    assert "that contention left" in md
