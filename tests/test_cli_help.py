"""What the CLI offers is what it accepts, every command says what it does, and its output carries
no noise: repeated notes once, library warnings about nothing the user did left out."""
import argparse
import logging
import re

import pytest

import impls
from rnnbench import cli
from rnnbench.recommend import Recommendation


def _subparsers():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub


def _offered(help_text: str) -> list[str]:
    (names,) = re.findall(r"one of: ([\w, ]+)", help_text)
    return [n.strip() for n in names.split(",")]


def test_every_command_has_a_description_and_the_top_level_help_names_measure(capsys):
    parser, sub = _subparsers()
    for name, p in sub.choices.items():
        assert p.description and len(p.description) > 20, name
    top = parser.format_help()
    assert "--measure" in top and "--from-state-dict" in top
    with pytest.raises(SystemExit):
        cli.main(["list", "--help"])
    assert "whether it runs on this machine" in capsys.readouterr().out


def test_recommend_offers_as_backends_exactly_the_ones_it_accepts(tmp_path, capsys):
    _, sub = _subparsers()
    action = next(a for a in sub.choices["recommend"]._actions if a.dest == "backends")
    offered = _offered(action.help)
    assert offered == impls.names(kind="rnn")  # no transformer baseline: --measure ranks RNN backends
    argv = ["recommend", "--cell", "lstm", "--batch", "4", "--seq-len", "4", "--hidden", "4", "--mode", "forward",
            "--device", "cpu", "--measure", "--out", str(tmp_path)]
    for baseline in impls.names(kind="baseline"):  # not offered, and refused by name
        assert cli.main(argv + ["--backends", baseline]) == 2
        assert f"unknown RNN backend {baseline!r}; valid: {', '.join(offered)}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    run_action = next(a for a in sub.choices["run"]._actions if a.dest == "backends")
    assert _offered(run_action.help) == impls.names()  # a sweep takes baselines too


def test_a_note_repeated_is_printed_once():
    rec = Recommendation({"cell": "lstm", "mode": "train", "batch": 8, "seq_len": 8, "input_size": None,
                          "hidden": None, "layers": 1, "dtype": "float32", "device": "cpu", "bidirectional": False,
                          "lengths": "full"}, None,
                         reason="no runs", notes=["transformer baseline x at B=8: 1 ms"] * 8 + ["other"])
    text = str(rec)
    assert text.count("note: transformer baseline x at B=8: 1 ms") == 1 and "note: other" in text


def test_a_library_warning_about_no_gpu_is_left_out_of_the_clis_output(tmp_path, monkeypatch, caplog):
    """torch warns "No CUDA runtime is found" wherever a CUDA toolkit sits on a machine without a GPU
    (here: CUDA_HOME set); after cli.main the warning is not emitted, before it was."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    logger = logging.getLogger("torch.utils.cpp_extension")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr(logger, "propagate", True)
    with caplog.at_level(logging.WARNING):
        cpp_extension._find_cuda_home()
    if cpp_extension.torch.cuda.is_available():
        pytest.skip("a GPU is present: torch does not warn")
    assert "No CUDA runtime is found" in caplog.text  # the library does warn
    caplog.clear()
    assert cli.main(["list"]) == 0
    with caplog.at_level(logging.WARNING):
        cpp_extension._find_cuda_home()
    assert "No CUDA runtime" not in caplog.text
