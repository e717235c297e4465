"""Tasks: each baseline matches its formula on generated data; data are seeded and local."""
import collections
import hashlib
import math
import socket

import numpy as np
import pytest

from rnnbench import tasks


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: nothing may download at run time."""
    def refuse(*args, **kwargs):
        raise AssertionError("a task tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", tasks.names())
def test_every_task_builds_offline_and_is_seeded(name, no_network):
    task = tasks.get(name)
    x1, y1 = task.train_batch(np.random.default_rng(5), 8)
    x2, y2 = task.train_batch(np.random.default_rng(5), 8)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    T = x1.shape[0]
    assert x1.shape[1] == 8
    if task.targets == "all":
        assert y1.shape[:2] == (T, 8)
    else:
        assert y1.shape[0] == 8
    if task.input_kind == "tokens":
        assert x1.dtype == np.int64 and 0 <= x1.min() and x1.max() < task.input_dim
    else:
        assert x1.dtype == np.float32 and x1.shape[2] == task.input_dim
    assert len(task.data_sha256()) == 64
    assert tasks.get(name).data_sha256() == task.data_sha256()
    assert math.isfinite(task.baseline())


def test_unknown_task_and_bad_lengths_name_the_choices():
    with pytest.raises(ValueError, match="valid: copy, adding"):
        tasks.get("nope")
    with pytest.raises(ValueError, match="from 2 to"):
        tasks.get("adding", seq_len=1)
    tasks.get("forecast", seq_len=tasks.TASKS["forecast"].max_seq_len)  # the longest still has a training window


@pytest.mark.parametrize("T", [10, 50])
def test_copy_memoryless_baseline_is_chance_on_the_copied_symbols(T):
    task = tasks.get("copy", seq_len=T)
    assert task.baseline() == 1 / 8
    x, y = task.train_batch(np.random.default_rng(0), 20000)
    assert x.shape == (T + 20, 20000)
    np.testing.assert_array_equal(y[T + 10:], x[:10])  # the symbols come back after the marker
    assert (x[T + 9] == 9).all() and (y[:T + 10] == 0).all()
    # the best memoryless model predicts each step's marginal distribution of targets
    marginal = np.stack([np.bincount(y[t], minlength=task.output_size) for t in range(T + 20)]) / y.shape[1]
    logits = np.log(np.maximum(marginal, 1e-300))[:, None, :]  # [T+20, 1, C]
    xv, yv = task.validation()
    value = task.metric(np.broadcast_to(logits, yv.shape + (task.output_size,)), yv)
    assert value == pytest.approx(task.baseline(), abs=0.02)
    assert task.metric(np.eye(task.output_size)[yv], yv) == 1.0  # a perfect copy
    shifted = np.eye(task.output_size)[np.roll(yv, 1, axis=0)]  # [T+20, B, 9]: one step late
    assert task.metric(shifted, yv) < 0.3  # only the copied steps count, each at its own position


def test_adding_baseline_is_the_variance_of_the_sum():
    task = tasks.get("adding", seq_len=50)
    x, y = task.train_batch(np.random.default_rng(0), 50000)
    markers = x[:, :, 1]
    assert (markers.sum(axis=0) == 2).all()
    assert (markers[:25].sum(axis=0) == 1).all() and (markers[25:].sum(axis=0) == 1).all()
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * markers).sum(axis=0), rtol=1e-6)
    assert task.baseline() == pytest.approx(1 / 6)
    assert task.metric(np.ones_like(y), y) == pytest.approx(1 / 6, abs=0.004)  # always predicting 1


@pytest.mark.parametrize("name", ["seqdigits", "seqdigits_permuted"])
def test_seqdigits_chance_and_split(name):
    from sklearn.datasets import load_digits

    task = tasks.get(name)
    xv, yv = task.validation()
    assert xv.shape == (64, len(yv), 1) and task.baseline() == 0.1
    counts = np.bincount(yv, minlength=10) / len(yv)
    for c in range(10):  # a constant guess scores its class frequency, near chance
        guess = np.zeros((len(yv), 10))
        guess[:, c] = 1
        assert task.metric(guess, yv) == pytest.approx(counts[c]) and abs(counts[c] - 0.1) < 0.04
    digits = load_digits()
    assert len(yv) + len(task.train_labels) == len(digits.target)
    # every validation image is a real digit image (permuted or not), with its own label
    pixels = {tuple(np.sort(img)): lab for img, lab in zip(digits.data / 16.0, digits.target)}
    for img, lab in zip(xv[:, :20, 0].T, yv[:20]):
        assert pixels[tuple(np.sort(img.astype(np.float64)))] == lab
    with pytest.raises(ValueError, match="fixed length of 64"):
        tasks.get(name, seq_len=32)


def test_seqdigits_permuted_is_one_fixed_permutation():
    plain = tasks.get("seqdigits").validation()[0][:, :, 0]  # [64, N]
    permuted = tasks.get("seqdigits_permuted").validation()[0][:, :, 0]
    order = np.random.default_rng(0).permutation(64)
    np.testing.assert_array_equal(permuted, plain[order])


def test_charlm_baseline_is_the_unigram_cross_entropy():
    from pydoc_data.topics import topics

    task = tasks.get("charlm", seq_len=32)
    text = "\n".join(topics[k] for k in sorted(topics))
    assert task.data_sha256() == hashlib.sha256(text.encode()).hexdigest()
    split = int(len(text) * 0.9)
    counts = collections.Counter(text[:split])
    total = sum(counts.values()) + len(task.vocab)
    xv, yv = task.validation()
    np.testing.assert_array_equal(xv[1:], yv[:-1])  # targets are the next characters
    scored = "".join(task.vocab[i] for i in yv.T.reshape(-1))
    assert scored in text[split:]  # the validation windows are consecutive text of the held-out tail
    bits = -np.mean([math.log2((counts[ch] + 1) / total) for ch in scored])
    assert task.baseline() == pytest.approx(bits, rel=1e-9)
    uniform = np.zeros(yv.shape + (len(task.vocab),))
    assert task.metric(uniform, yv) == pytest.approx(math.log2(len(task.vocab)))


def test_forecast_baseline_is_the_persistence_forecast():
    import statsmodels.api as sm

    task = tasks.get("forecast", seq_len=16)
    errors = []
    for name, series in (("sunspots", sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"]),
                         ("co2", sm.datasets.co2.load_pandas().data["co2"].interpolate())):
        s = series.to_numpy(dtype=np.float64)
        assert not np.isnan(s).any()
        split = int(len(s) * 0.8)
        sq = []
        for target in range(split, len(s)):
            window = s[target - 16:target]
            last, nxt = (window[-1] - window.mean()) / window.std(), (s[target] - window.mean()) / window.std()
            sq.append((last - nxt) ** 2)
        errors.append(np.mean(sq))
    assert task.baseline() == pytest.approx(np.mean(errors), rel=1e-5)
    xv, _ = task.validation()
    np.testing.assert_allclose(xv[:, :, 0].mean(axis=0), 0, atol=1e-5)  # each window normalised
    np.testing.assert_allclose(xv[:, :, 0].std(axis=0), 1, atol=1e-4)


@pytest.mark.parametrize("name", tasks.names())
def test_margin_is_a_real_improvement(name):
    task = tasks.get(name)
    assert not task.beats_baseline(task.baseline())
    better = task.baseline() + (1 if task.higher_is_better else -1) * task.margin
    assert task.beats_baseline(better)


@pytest.mark.parametrize("name", tasks.names())
def test_quality_target_is_stricter_than_the_learned_margin(name):
    task = tasks.get(name)
    sign = 1 if task.higher_is_better else -1
    assert task.beats_baseline(task.target)  # reaching the target is learning, and more
    assert sign * (task.target - task.baseline()) > task.margin
    assert task.reached(task.target) and not task.reached(task.target - sign * 1e-6)
    assert not task.reached(task.baseline())
    assert task.target_text
