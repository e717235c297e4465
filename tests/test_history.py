"""rnnbench history: asv results -> one offline page, steps found by asv.step_detect at their commit."""
import datetime
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rnnbench import history

BENCH = "gate.Gate.time_iteration"
PARAMS = [["'torch_eager'", "'jax_scan'"], ["'forward'", "'train'"]]
N_COMMITS, STEP_AT, FAILED_AT = 6, 3, 4  # the slowdown lands at commit 3; commit 4 did not build
CHROMIUM = Path("/usr/bin/chromium")


def git(repo: Path, *args: str, env=None) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A git repo of N_COMMITS and asv results for them: torch_eager/forward gets 1.5x slower at
    STEP_AT, everything else flat with 1% noise; FAILED_AT kept no value; the results' commit dates
    run backwards, so only the commit graph gives the right order."""
    from asv import runner
    from asv.results import Results

    root = tmp_path_factory.mktemp("history")
    repo, results = root / "repo", root / "results"
    repo.mkdir()
    git(repo, "init", "-q")
    commits = []
    for i in range(N_COMMITS):
        (repo / "f").write_text(str(i))
        git(repo, "add", "f")
        git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", f"c{i}")
        commits.append(git(repo, "rev-parse", "HEAD"))
    (results / "synth").mkdir(parents=True)
    (results / "synth" / "machine.json").write_text(json.dumps({"machine": "synth", "version": 1}))
    (results / "benchmarks.json").write_text(json.dumps(
        {BENCH: {"name": BENCH, "unit": "seconds", "type": "time", "params": PARAMS, "version": "1"}, "version": 2}))
    rng = np.random.default_rng(0)
    base = datetime.datetime(2026, 11, 30, tzinfo=datetime.timezone.utc)
    for i, commit in enumerate(commits):
        date_ms = int((base - datetime.timedelta(hours=i)).timestamp() * 1000)
        res = Results({"machine": "synth", "python": "3.11"}, {}, commit, date_ms, "3.11", "virtualenv-py3.11", {})
        values, samples = [], []
        for backend, mode in [(b, m) for b in PARAMS[0] for m in PARAMS[1]]:
            level = 0.010 * (1.5 if (backend, mode) == ("'torch_eager'", "'forward'") and i >= STEP_AT else 1.0)
            s = list(level * (1 + 0.01 * rng.standard_normal(20)))
            values.append(None if i == FAILED_AT else float(np.median(s)))
            samples.append(None if i == FAILED_AT else s)
        result = runner.BenchmarkResult(result=values, samples=samples, number=[1] * 4, errcode=0, stderr="",
                                        profile=None)
        res.add_result({"name": BENCH, "version": "1", "params": PARAMS}, result, record_samples=True)
        res.save(str(results))
    return {"repo": repo, "results": results, "commits": commits}


@pytest.fixture(scope="module")
def page(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("page")
    return history.build_history(synthetic["results"], out, repo=synthetic["repo"]), out


def test_the_step_is_found_at_its_commit_and_nowhere_else(page, synthetic):
    steps = page[0]["steps"]
    assert len(steps) == 1, steps
    step = steps.iloc[0]
    assert step["params"] == "torch_eager, forward" and step["benchmark"] == BENCH
    assert step["commit"] == synthetic["commits"][STEP_AT]
    assert step["ratio"] == pytest.approx(1.5, rel=0.02)


def test_commits_follow_the_graph_not_the_dates(synthetic):
    points = history.load_points(synthetic["results"])
    order = history.commit_order(points[["commit", "date"]].drop_duplicates("commit"), synthetic["repo"])
    assert order == synthetic["commits"]  # dates run backwards: by date it would be reversed


def test_the_failed_commit_is_named(page, synthetic):
    failed = page[0]["failed"]
    assert failed["commit"].tolist() == [synthetic["commits"][FAILED_AT][:8]]
    text = page[0]["html"].read_text()
    assert synthetic["commits"][FAILED_AT][:8] in text.split("Commits that could not run")[1].split("<h2>")[0]
    assert f"torch_eager, forward at {synthetic['commits'][FAILED_AT][:8]};" in text  # and per point


def test_the_page_is_self_contained(page, synthetic):
    text = page[0]["html"].read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing fetched from a network
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == 1  # one benchmark, one figure
    largest = text.split("Largest steps")[1].split("<h2>")[0]
    assert synthetic["commits"][STEP_AT][:8] in largest and "x1.5" in largest


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, synthetic):
    assert history.history_command(tmp_path / "absent", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and err.count("\n") == 1 and not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    assert history.history_command(tmp_path / "empty", tmp_path / "out") == 2
    assert "no asv results" in capsys.readouterr().err and not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "index.html").write_text("someone's page")
    assert history.history_command(synthetic["results"], tmp_path / "mine", repo=synthetic["repo"]) == 2
    assert (tmp_path / "mine" / "index.html").read_text() == "someone's page"  # never overwritten


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: the page is not viewed in a browser")
def test_headless_chromium_shows_the_figures_offline(page, tmp_path):
    """Chromium with every host unresolvable: the page lays out, and its one embedded figure decodes
    to its full size (a broken image would be a 16 px icon)."""
    probe = tmp_path / "probe.html"
    probe.write_text(page[0]["html"].read_text().replace(
        "</body>", "<script>onload=()=>{const i=document.images[0];"
        "document.title=`${i.complete} ${i.naturalWidth}x${i.naturalHeight}`}</script></body>"))
    out = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
                          "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", out.stdout)
    assert title, out.stdout[-2000:] + out.stderr[-2000:]
    complete, size = title.group(1).split()
    width, height = map(int, size.split("x"))
    assert complete == "true" and width > 500 and height > 300, title.group(1)
    assert "Largest steps" in out.stdout


def test_the_cli_writes_the_page_and_rewrites_its_own(page, synthetic, tmp_path, capsys):
    from rnnbench import cli

    shutil.copy(page[0]["html"], tmp_path / "index.html")  # a page this module wrote: rewritten, not refused
    assert cli.main(["history", str(synthetic["results"]), "--out", str(tmp_path)]) == 0
    assert "1 steps, 1 commits that could not run" in capsys.readouterr().out
    assert (tmp_path / "index.html").read_text() != page[0]["html"].read_text()  # unknown to this git: by date
    assert cli.main(["history", str(tmp_path / "absent"), "--out", str(tmp_path / "x")]) == 2


def test_instructions_are_drawn_beside_time(tmp_path):
    """A count benchmark (unit instructions) of the gate's module gets a figure beside the time
    benchmark of the same module: each series over its own median, one panel per parameter set."""
    from asv import runner
    from asv.results import Results

    count_bench = "gate.Instructions.track_instructions"
    results = tmp_path / "results"
    (results / "synth").mkdir(parents=True)
    (results / "synth" / "machine.json").write_text(json.dumps({"machine": "synth", "version": 1}))
    (results / "benchmarks.json").write_text(json.dumps({
        BENCH: {"name": BENCH, "unit": "seconds", "type": "time", "params": PARAMS, "version": "1"},
        count_bench: {"name": count_bench, "unit": "instructions", "type": "track", "params": PARAMS, "version": "1"},
        "version": 2}))
    assert history.time_beside_instructions(history._units(results)) == [(BENCH, count_bench)]
    base = datetime.datetime(2026, 11, 30, tzinfo=datetime.timezone.utc)
    for i in range(3):
        commit = f"{i:x}" * 40
        res = Results({"machine": "synth", "python": "3.11"}, {}, commit,
                      int((base + datetime.timedelta(hours=i)).timestamp() * 1000), "3.11", "virtualenv-py3.11", {})
        for bench, scale in ((BENCH, 0.01), (count_bench, 1e8)):
            values = [scale * (1 + 0.01 * i)] * 4
            res.add_result({"name": bench, "version": "1", "params": PARAMS},
                           runner.BenchmarkResult(result=values, samples=[[v] for v in values], number=[1] * 4, errcode=0,
                                                  stderr="", profile=None))
        res.save(str(results))
    text = history.build_history(results, tmp_path / "page", repo=tmp_path)["html"].read_text()
    assert f"Wall time beside instructions: {BENCH}, {count_bench}" in text
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == 3  # each benchmark, and the pair
