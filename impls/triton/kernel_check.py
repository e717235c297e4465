"""Offline kernel check: compile every plan the triton backends can choose for a real GPU, no GPU needed.

``plans()`` enumerates, from ``plan.make_plan`` itself, the plans of every registered triton backend
for 3 cells x H in HIDDEN x the CUDA dtypes, each as up to three kernels (forward saving for a
backward, forward alone, backward), each in up to four variants (VARIANTS: with lengths, reverse).  ``compile_kernel`` compiles one for a ``GPUTarget`` with the
installed triton and its bundled ptxas and reads registers, spill bytes and shared memory from
ptxas's report and the compiled metadata, plus per-timestep instruction counts from the PTX.
Run ``python -m impls.triton.kernel_check [--arch 90] [--workers 2] [--variants ,ragged]`` for the table.
Needs no ``TRITON_INTERPRET`` (it is cleared before triton is imported).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from ..spec import GATES
from .plan import ITEMSIZE, Plan, make_plan

CELLS = ("rnn_tanh", "lstm", "gru")
HIDDEN = (16, 32, 64, 128, 256)
DTYPES = tuple(ITEMSIZE)
KERNELS = ("fwd_save", "fwd", "bwd")  # forward before a backward, forward alone, backward
# the kernels' RAGGED and REVERSE: "" unidirectional full length (rows all T), then per-row lengths, the reverse
# direction of a full batch, the reverse direction of a ragged one
VARIANTS = ("", "ragged", "reverse", "ragged-reverse")
# shared memory one block may use (cudaDevAttrMaxSharedMemoryPerBlockOptin): H100/H200, A100
MAX_SHARED = {90: 227 * 1024, 80: 163 * 1024}
_TY = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class Kernel:
    """One kernel to compile: a backend's plan for a layer, and which of its kernels."""

    backend: str
    cell: str
    hidden: int
    dtype: str
    kernel: str  # fwd_save | fwd | bwd
    plan: Plan
    variant: str = ""  # one of VARIANTS

    @property
    def name(self) -> str:
        variant = f"-{self.variant}" if self.variant else ""
        return f"{self.backend}/{self.cell}/H{self.hidden}/{self.dtype}/{self.kernel}{variant}"

    @property
    def reverse(self) -> bool:
        return "reverse" in self.variant

    @property
    def ragged(self) -> bool:
        return "ragged" in self.variant


def triton_backends() -> dict[str, dict]:
    """Registered backends served by this package, with their options."""
    import impls

    return {n: impls.get(n).options for n in impls.names("rnn") if impls.module_of(n) == "impls.triton"}


def plans(cells=CELLS, hidden=HIDDEN, dtypes=DTYPES, kernels=KERNELS, backends=None, variants=VARIANTS) -> list[Kernel]:
    """Every (backend, cell, H, dtype, kernel, variant) the backends compile on a GPU, each compiled kernel once."""
    out, seen = [], set()
    for backend, options in (backends or triton_backends()).items():
        for cell in cells:
            for h in hidden:
                for dtype in dtypes:
                    plan = make_plan(cell, h, dtype, "cuda", interpreted=False, **options)
                    for kernel in kernels:
                        if kernel == "fwd" and cell == "rnn_tanh":
                            continue  # rnn_tanh saves nothing: its forward is one kernel
                        for variant in variants:
                            key = (cell, dtype, kernel, plan, variant)
                            if key not in seen:
                                seen.add(key)
                                out.append(Kernel(backend, cell, h, dtype, kernel, plan, variant))
    return out


def _signature(k: Kernel):
    """(kernel function, signature, constants) for triton.compile."""
    from . import kernels
    from .function import constexprs

    G, p = GATES[k.cell], "*" + _TY[k.dtype]
    consts = constexprs(k.plan, G, k.kernel == "bwd", k.reverse, k.ragged)
    num_warps = consts.pop("num_warps")
    i32, bar, lens = "i32", consts["BARRIER"] and "*i32", k.ragged and "*i32"
    if k.kernel == "bwd":
        fn = kernels.rnn_bwd_kernel
        args = dict(w_ptr=p, hs_ptr=p, cs_ptr=G == 4 and p, acts_ptr=G > 1 and p, dy_ptr=p, dg_ptr=p,
                    dn_ptr=G == 3 and p, dh_ptr="*fp32", dc_ptr=G == 4 and "*fp32", len_ptr=lens, bar_ptr=bar,
                    s_start=i32, n_steps=i32, S=i32, T=i32, B=i32, H=i32, tile_b0=i32, max_spins=i32)
    else:
        save = k.kernel == "fwd_save"
        fn = kernels.rnn_fwd_kernel
        args = dict(gi_ptr=p, w_ptr=p, b_ptr=p, hs_ptr=p, c_ptr=G == 4 and "*fp32", cs_ptr=save and G == 4 and p,
                    acts_ptr=save and G > 1 and p, len_ptr=lens, bar_ptr=bar, s_start=i32, n_steps=i32, T=i32,
                    B=i32, H=i32, tile_b0=i32, max_spins=i32)
        consts["SAVE"] = save
    const = {**consts, **{name: None for name, ty in args.items() if not ty}}
    sig = {**{name: ty for name, ty in args.items() if ty}, **{name: "constexpr" for name in const}}
    return fn, sig, const, num_warps


def _time_loop(ptx: str) -> list[str]:
    """The PTX lines of the kernel's time loop: the longest top-level loop (LLVM marks a header "Loop
    Header: Depth=1"), from its header label to the last branch back to it; the persistent barrier's
    spin is a loop of its own beside or inside it."""
    lines = [line.strip() for line in ptx.splitlines()]
    best = []
    for head, line in enumerate(lines):
        if "Loop Header: Depth=1" not in line:
            continue
        label = re.escape(line.split(":")[0])
        back = [i for i, x in enumerate(lines) if re.search(rf"\bbra(?:\.uni)?\s+{label};", x)]
        if back and max(back) - head > len(best):
            best = lines[head:max(back) + 1]
    return best


def per_step_counts(ptx: str, num_warps: int, itemsize: int) -> dict:
    """Per timestep, from the PTX of the time loop (not unrolled: one pass is one step): every PTX
    instruction (per thread), mma.sync and
    wgmma instructions (per warp / per warpgroup), CTA barriers, tanh.approx, and the shared-memory
    bytes one program reads: ldmatrix and ld.shared per thread times the threads, plus each wgmma's
    shared operands (A = the W_hh tile when it is a descriptor, and B) per warpgroup.  Checked on the
    fused kernels; in the split kernels' PTX no top-level loop is found yet, and the counts are 0."""
    body = _time_loop(ptx)
    threads, groups = 32 * num_warps, max(1, num_warps // 4)
    shared = 0
    for line in body:
        m = re.match(r"ldmatrix\.sync\.aligned\.m8n8\.x(\d)", line)
        if m:
            shared += 4 * int(m.group(1)) * threads
            continue
        m = re.match(r"ld\.shared(?:\.v(\d))?\.[bfsu](\d+)", line)
        if m:
            shared += int(m.group(1) or 1) * int(m.group(2)) // 8 * threads
            continue
        m = re.match(r"wgmma\.mma_async\S*\.m(\d+)n(\d+)k(\d+)\S*\s+\{[^}]*\},\s*(\S)", line)
        if m:
            M, N, K = (int(g) for g in m.groups()[:3])
            a_shared = m.group(4) != "{"  # A from a shared-memory descriptor, not registers
            shared += (N * K + (M * K if a_shared else 0)) * itemsize * groups
    return dict(
        instructions=sum(bool(re.match(r"(@!?%p\d+\s+)?[a-z]", line)) and not line.endswith(":") for line in body),
        mma=sum(line.startswith("mma.sync") for line in body),
        wgmma=sum(line.startswith("wgmma.mma_async") for line in body),
        barriers=sum(line.startswith(("bar.sync", "barrier.sync", "bar.cta.sync")) for line in body),
        tanh_approx=sum(line.startswith("tanh.approx") for line in body),
        shared_bytes_per_step=shared,
    )


def compile_kernel(k: Kernel, arch: int = 90) -> dict:
    """Compile one kernel for sm_<arch>; its resource use as ptxas reports it, and the compile time."""
    os.environ.pop("TRITON_INTERPRET", None)
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn, sig, const, num_warps = _signature(k)
    log = io.StringIO()
    start = time.perf_counter()
    with knobs.nvidia.scope(), knobs.compilation.scope():
        knobs.nvidia.dump_ptxas_log = True
        knobs.compilation.always_compile = True  # a cached kernel runs no ptxas, so has no report
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(ASTSource(fn, sig, const), target=GPUTarget("cuda", arch, 32),
                                      options={"num_warps": num_warps})
    seconds = time.perf_counter() - start
    text = log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    spill_st = re.search(r"(\d+) bytes spill stores", text)
    spill_ld = re.search(r"(\d+) bytes spill loads", text)
    if not (regs and spill_st and spill_ld):
        raise RuntimeError(f"{k.name}: no resource usage in the ptxas log:\n{text[-2000:]}")
    threads = 32 * num_warps
    return dict(
        name=k.name, arch=arch, triton=triton.__version__, num_warps=num_warps, path=k.plan.path,
        block_h=k.plan.block_h, registers=int(regs.group(1)), spill_stores=int(spill_st.group(1)),
        spill_loads=int(spill_ld.group(1)), shared=compiled.metadata.shared,
        register_bytes=int(regs.group(1)) * 4 * threads, compile_s=round(seconds, 2),
        **per_step_counts(compiled.asm["ptx"], num_warps, ITEMSIZE[k.dtype]),
    )


def _compile_one(args):
    k, arch = args
    try:
        return compile_kernel(k, arch)
    except Exception as exc:  # a kernel that does not compile is a finding, reported with the others
        return dict(name=k.name, arch=arch, error=f"{type(exc).__name__}: {str(exc)[-1500:]}")


def _compiled_not_interpreted():
    os.environ.pop("TRITON_INTERPRET", None)


def compile_all(items: list[Kernel], arch: int = 90, workers: int = 2):
    """Compile in a pool of processes (triton's compile is single-threaded); results in order, as they come.
    Spawned, not forked: a parent that imported the kernels under the interpreter (a test run) would
    hand its children interpreted functions, which do not compile."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_compiled_not_interpreted) as pool:
        yield from pool.map(_compile_one, [(k, arch) for k in items])


def violations(results: list[dict], spill_budget: int, arch: int) -> list[str]:
    """Why each result fails: no compile, spills above the budget, shared memory above the target."""
    bad = []
    for r in results:
        if "error" in r:
            bad.append(f"{r['name']} sm_{arch}: does not compile: {r['error'].splitlines()[0]}")
            continue
        if r["spill_stores"] > spill_budget:
            bad.append(f"{r['name']} sm_{arch}: spills {r['spill_stores']} B/thread (budget {spill_budget}), "
                       f"{r['registers']} regs at {r['num_warps']} warps")
        if r["shared"] > MAX_SHARED[arch]:
            bad.append(f"{r['name']} sm_{arch}: {r['shared']} B shared memory, more than {MAX_SHARED[arch]}")
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m impls.triton.kernel_check", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, choices=sorted(MAX_SHARED), default=90)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--hidden", default=",".join(map(str, HIDDEN)))
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--backends", default=None, help="comma-separated triton backends (default: all)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated kernel variants; '' is the plain kernel (default: {','.join(VARIANTS)})")
    parser.add_argument("--json", help="write the results to this file")
    a = parser.parse_args(argv)
    backends = triton_backends()
    if a.backends:
        unknown = set(a.backends.split(",")) - set(backends)
        if unknown:
            parser.error(f"unknown triton backend(s) {', '.join(sorted(unknown))}; valid: {', '.join(backends)}")
        backends = {n: backends[n] for n in a.backends.split(",")}
    variants = a.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; valid: {','.join(VARIANTS)}")
    items = plans(a.cells.split(","), [int(h) for h in a.hidden.split(",")], a.dtypes.split(","), backends=backends,
                  variants=variants)
    cols = ("registers", "spill_stores", "shared", "num_warps", "instructions", "mma", "wgmma", "barriers",
            "shared_bytes_per_step", "compile_s")
    print("kernel".ljust(58), *(c[:10].rjust(10) for c in cols), flush=True)
    results = []
    for r in compile_all(items, a.arch, a.workers):
        results.append(r)
        print(r["name"].ljust(58), *(str(r.get(c, "ERR")).rjust(10) for c in cols), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
