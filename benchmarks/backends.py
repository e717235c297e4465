"""Every backend (RNNs and transformer baselines) over cell x sequence length x mode.

``Speed`` times one iteration of the mode with asv's own clock and records asv's
peak RSS; ``Measured`` tracks what ``rnnbench.measure.measure`` records for the
same configuration (tokens/s, peak bytes by the harness's method, gradient decay).
"""
import math

from asv_runner.benchmarks.mark import skip_for_params

from rnnbench.measure import measure

from .common import BACKENDS, CELLS, MODES, SEQ_LENS, checked, config, prepare

PARAMS = (BACKENDS, CELLS, SEQ_LENS, MODES)
PARAM_NAMES = ["backend", "cell", "seq_len", "mode"]


class Speed:
    """One forward (no graph) or one forward + backward, synced, as asv times it."""

    params, param_names = PARAMS, PARAM_NAMES
    timeout = 300

    def setup(self, backend, cell, seq_len, mode):
        self.prepared = prepare(config(backend, cell, seq_len, mode))

    def _iteration(self):
        self.prepared.fn()
        self.prepared.runner.sync()

    def time_iteration(self, backend, cell, seq_len, mode):
        self._iteration()

    def peakmem_iteration(self, backend, cell, seq_len, mode):
        self._iteration()


class Measured:
    """The harness's record of the configuration (measured in setup, one field per track)."""

    params, param_names = PARAMS, PARAM_NAMES
    timeout = 300

    def setup(self, backend, cell, seq_len, mode):
        # asv runs each benchmark in a process of its own, so the memory probe may run here ("fresh")
        records = checked(measure(config(backend, cell, seq_len, mode), memory="fresh"))
        self.timing = records[0]
        self.stability = records[1] if len(records) > 1 else None

    def track_tokens_per_s(self, backend, cell, seq_len, mode):
        return self.timing["tokens_per_s"]

    track_tokens_per_s.unit = "tokens/s"  # higher is better: asv compare lists a rise as "worse"

    def track_peak_bytes(self, backend, cell, seq_len, mode):
        return self.timing["peak_bytes"]

    track_peak_bytes.unit = "bytes"

    @skip_for_params([(b, c, t, "forward") for b in BACKENDS for c in CELLS for t in SEQ_LENS])
    def track_grad_decay_per_step(self, backend, cell, seq_len, mode):
        decay = self.stability["grad_decay_per_step"]
        return math.nan if decay is None else decay  # None: g_0 underflowed to zero; asv shows n/a

    track_grad_decay_per_step.unit = "log10/step"
