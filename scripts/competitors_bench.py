"""Issue 18's speed table: each competitor backend's median time as a ratio to torch_cudnn and jax_scan.

A benchmark, not a test.  All backends of one configuration are built in one
process and timed interleaved: each round times every backend (in a rotated
order) for ``--calls`` calls, so a busy neighbour slows all of them alike; the
median is over every call of every round.  The load average is printed per
round.  ``--compile-times`` also measures torch_compile's compile_s in two fresh
processes sharing a new inductor cache directory (the first cold, the second warm).

    .venv/bin/python scripts/competitors_bench.py --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import impls  # noqa: E402
from impls import runtime  # noqa: E402
from impls.runner import hook, timed as timed_as_speed  # noqa: E402
from impls.spec import RNNSpec, Unsupported, init_weights, make_inputs  # noqa: E402

BASELINES = ("torch_cudnn", "jax_scan")
COMPETITORS = ("torch_compile", "onnxruntime", "flax_lstm", "flax_gru")
MODES = ("forward", "train")


def _call(runner, mode, x, dy):
    if mode == "forward":
        return lambda: runner.forward(x)
    return lambda: runner.forward_backward(x, None, dy)


def bench_config(cell, dtype, mode, backends, shape, rounds, calls):
    """{backend: {median_s, samples, status, message, impl_label, compile_s}} for one configuration."""
    T, B, I, H = shape
    spec = RNNSpec(cell, I, H)
    weights = init_weights(spec)
    x, _, dy = make_inputs(spec, T, B)
    rows, timed = {}, []
    for name in backends:
        ok, reason = impls.available(name, "cpu")
        if ok:
            ok, reason = timed_as_speed(impls.get(name), "cpu", cell)
        if not ok:
            rows[name] = {"status": "unsupported", "message": reason}
            continue
        try:
            runner = impls.get(name).build(spec, weights, "cpu", dtype)
            xs, dys = runner.put(x), runner.put(dy)
            compile_s = hook(runner, "compile")(xs, None, dys if mode == "train" else None)
            fn = _call(runner, mode, xs, dys)
            fn()  # one warm call after compile
            runner.sync()
        except Unsupported as exc:
            rows[name] = {"status": "unsupported", "message": str(exc)}
            continue
        rows[name] = {"status": "ok", "impl_label": runner.impl_label(), "compile_s": compile_s, "samples": []}
        timed.append((name, fn, hook(runner, "timer")()))
    for r in range(rounds):
        order = timed[r % len(timed):] + timed[:r % len(timed)] if timed else []
        for name, fn, timer in order:
            rows[name]["samples"] += [timer.time(fn) for _ in range(calls)]
        print(f"  {cell} {dtype} {mode} round {r}: load {os.getloadavg()[0]:.2f}", flush=True)
    for row in rows.values():
        if row["status"] == "ok":
            row["median_s"] = statistics.median(row["samples"])
    return rows


def compile_times(cell, shape, mode):
    """torch_compile compile_s in two fresh processes sharing one new inductor cache: cold, then warm."""
    T, B, I, H = shape
    child = (
        "import sys, json; sys.path.insert(0, %r)\n"
        "import impls\nfrom impls.spec import RNNSpec, init_weights, make_inputs\n"
        "spec = RNNSpec(%r, %d, %d); x, _, dy = make_inputs(spec, %d, %d)\n"
        "r = impls.get('torch_compile').build(spec, init_weights(spec), 'cpu', 'float32')\n"
        "s = r.compile(r.put(x), None, r.put(dy) if %r == 'train' else None)\n"
        "print(json.dumps({'compile_s': s, 'compile_cache': r.compile_cache()}))\n"
    ) % (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), cell, I, H, T, B, mode)
    out = []
    with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env, timeout=900)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
            out.append(json.loads(lines[-1]) if lines else {"error": done.stderr[-500:]})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", default="lstm,gru", help="comma list of lstm, gru, rnn_tanh (default lstm,gru)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma list (default float32,bfloat16)")
    p.add_argument("--modes", default="forward,train", help="comma list of forward, train (default both)")
    p.add_argument("--shape", default="128,32,64,128", help="T,B,I,H (default 128,32,64,128)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--calls", type=int, default=3, help="timed calls per backend per round (default 3)")
    p.add_argument("--compile-times", action="store_true", help="also measure torch_compile compile_s cold and warm")
    p.add_argument("--out", help="write the results as JSON to this new file (refused if it exists)")
    args = p.parse_args(argv)
    if args.out and os.path.exists(args.out):
        p.error(f"--out {args.out} exists; name a new file")
    shape = tuple(int(v) for v in args.shape.split(","))
    runtime.prepare_process()
    from impls.onednn_isa import onednn_isa

    result = {"shape_TBIH": shape, "onednn_isa": onednn_isa(), "cpu": runtime.cpu_model(),
              "versions": runtime.versions(("torch", "jax", "jaxlib", "flax", "onnx", "onnxruntime", "flashrnn")),
              "configs": []}
    print(f"oneDNN isa: {result['onednn_isa']}; load {os.getloadavg()}", flush=True)
    for cell in args.cells.split(","):
        backends = BASELINES + tuple(b for b in COMPETITORS if not b.startswith("flax_") or b == f"flax_{cell}")
        for dtype in args.dtypes.split(","):
            for mode in args.modes.split(","):
                rows = bench_config(cell, dtype, mode, backends, shape, args.rounds, args.calls)
                result["configs"].append({"cell": cell, "dtype": dtype, "mode": mode, "rows": rows})
                base = {b: rows[b].get("median_s") for b in BASELINES}
                for name, row in rows.items():
                    if row["status"] != "ok":
                        print(f"{cell:4} {dtype:8} {mode:7} {name:14} {row['status']}: {row['message'][:90]}")
                        continue
                    ratios = "  ".join(f"x{row['median_s'] / base[b]:.2f} vs {b}" if base[b] else f"- vs {b}" for b in BASELINES)
                    print(f"{cell:4} {dtype:8} {mode:7} {name:14} {row['median_s'] * 1e3:9.2f} ms  {ratios}  "
                          f"[{row['impl_label']}, compile {row['compile_s']:.1f}s]", flush=True)
    if args.compile_times:
        result["torch_compile_compile_s"] = {m: compile_times("lstm", shape, m) for m in ("forward", "train")}
        print("torch_compile compile_s (lstm, [cold, warm]):", json.dumps(result["torch_compile_compile_s"]))
    if args.out:
        with open(args.out, "x") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
