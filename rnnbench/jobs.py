"""Jobs: what a sweep runs.  Each kind knows its identity, how to describe, run and fail itself.

The ``Job`` protocol: ``key()`` (the identity that resume and the records share,
from the job type's one ``IDENTITY`` list, so ``record_key(record)`` of each of
its records equals it), ``describe()``, ``run(fresh_process) -> records``,
``failure(status, message) -> record``, ``to_dict()`` / ``from_dict()``.  The
executors and the sweep call only these; a new kind of job is one more class
and one line in ``JOB_TYPES``.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import ClassVar, Protocol

from . import ragged
from .config import MODES, ConfigError, check_common
from .suites import SETTINGS


class Job(Protocol):
    IDENTITY: ClassVar[tuple[str, ...]]
    RECORD_KIND: ClassVar[str]
    timeout_s: float

    def key(self) -> tuple: ...
    def describe(self) -> str: ...
    def run(self, fresh_process: bool) -> list[dict]: ...
    def failure(self, status: str, message: str) -> dict: ...
    def to_dict(self) -> dict: ...


class JobBase:
    """What every job shares: the identity tuple, the dict round trip, the record's configuration fields."""

    IDENTITY: ClassVar[tuple[str, ...]] = ()
    RECORD_KIND: ClassVar[str] = ""  # the ``kind`` of the records that carry this job's identity
    OTHER_RECORDS: ClassVar[dict] = {}  # kind -> identity fields those records leave out
    JOB: ClassVar[str] = ""  # the name in ``to_dict()["job"]``

    def key(self) -> tuple:
        """Identity of the job (what --resume looks for); timing knobs excluded."""
        return (self.JOB, *(getattr(self, f) for f in self.IDENTITY))

    def to_dict(self) -> dict:
        return {"job": self.JOB, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})  # unknown keys ("job") are ignored

    @property
    def record_fields(self) -> dict:
        return {"backend": self.backend, "device": self.device, "dtype": self.dtype, "cell": self.cell,
                "layers": self.layers, "batch": self.batch, "seq_len": self.seq_len,
                "input_size": self.input_size, "hidden": self.hidden}


@dataclass(frozen=True)
class TimingJob(JobBase):
    """One timed configuration (``rnnbench.measure``): a timing record, and a stability one in train mode."""

    IDENTITY: ClassVar[tuple[str, ...]] = ("backend", "cell", "layers", "batch", "seq_len", "input_size",
                                           "hidden", "dtype", "mode", "device", "bidirectional", "lengths", "round",
                                           "thread_limit")
    RECORD_KIND: ClassVar[str] = "timing"
    JOB: ClassVar[str] = "timing"
    # the other records it writes, with the identity fields they leave out: a stability record rides
    # along with a train-mode timing
    OTHER_RECORDS: ClassVar[dict] = {"stability": {"mode": "train"}}

    backend: str
    cell: str = "lstm"
    layers: int = 1
    batch: int = 16
    seq_len: int = 64
    input_size: int = 32
    hidden: int = 64
    dtype: str = "float32"
    mode: str = "train"
    device: str = "cpu"
    seed: int = 0
    tf32: bool = False
    min_time_s: float = SETTINGS.min_time_s
    max_time_s: float = SETTINGS.max_time_s
    min_repeats: int = SETTINGS.min_repeats
    timeout_s: float = SETTINGS.timing_timeout_s
    bidirectional: bool = False
    lengths: str = ragged.FULL  # the batch's length distribution (rnnbench.ragged): full, uniform:MIN, zipf:A
    round: int = 0  # which visit of the grid (rnnbench.sweep.in_rounds); round 0 also probes memory and checks
    # a suite's cap on one point: predicted (rnnbench.cost.predicted_point_s, from the time per token at the
    # next shorter T measured) to take longer, it is recorded unsupported with the estimate instead of run
    max_point_s: float | None = None
    # intra-op threads of every framework (``--threads``; impls.runtime.thread_env), 0: each framework's default.
    # XLA fixes its count when it starts, so a limit runs in a process of its own (rnnbench.sweep.batches)
    thread_limit: int = 0

    @property
    def record_fields(self) -> dict:
        """The configuration's fields, with the model's directions and the batch's lengths drawn."""
        return {**super().record_fields, "bidirectional": self.bidirectional, "lengths": self.lengths,
                **ragged.summary(self.lengths, self.seq_len, self.batch, self.seed), "round": self.round,
                "thread_limit": self.thread_limit}

    def validate(self) -> None:
        check_common(self.backend, self.cell, self.dtype, self.device,
                     {n: getattr(self, n) for n in ("layers", "batch", "seq_len", "input_size", "hidden")})
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        if not isinstance(self.bidirectional, bool):
            raise ConfigError(f"bidirectional must be true or false, got {self.bidirectional!r}")
        ragged.parse(self.lengths)
        if not (isinstance(self.thread_limit, int) and self.thread_limit >= 0):
            raise ConfigError(f"threads must be a positive integer (0: each framework's default), got "
                              f"{self.thread_limit!r}")

    def describe(self) -> str:
        model = (" bidirectional" if self.bidirectional else "") + (
            f" lengths={self.lengths}" if self.lengths != ragged.FULL else "") + (
            f" threads={self.thread_limit}" if self.thread_limit else "")
        return (f"{self.backend} {self.cell} {self.mode} B={self.batch} T={self.seq_len} H={self.hidden} "
                f"{self.dtype}{model}")

    def run(self, fresh_process: bool) -> list[dict]:
        from .measure import measure

        if self.round:  # memory is a property of the configuration: measured in round 0
            return measure(self, memory="skip")
        return measure(self, memory="fresh" if fresh_process else "subprocess")

    def failure(self, status: str, message: str) -> dict:
        from .measure import failure_record

        return failure_record(self, status, message)


@dataclass(frozen=True)
class InstructionJob(TimingJob):
    """One configuration's instructions per call, counted under callgrind (``rnnbench.instructions``):
    an ``instructions`` record.  CPU only: valgrind emulates a CPU, not a GPU."""

    RECORD_KIND: ClassVar[str] = "instructions"
    JOB: ClassVar[str] = "instructions"
    OTHER_RECORDS: ClassVar[dict] = {}

    def validate(self) -> None:
        super().validate()
        if self.device != "cpu":
            raise ConfigError(f"--metric instructions counts on the CPU (valgrind emulates a CPU), not on "
                              f"{self.device}; valid device: cpu")

    def run(self, fresh_process: bool) -> list[dict]:
        from .instructions import count

        return count(self)  # this process runs under callgrind (rnnbench.instructions.execute starts it)

    def failure(self, status: str, message: str) -> dict:
        from .measure import failure_record

        return failure_record(self, status, message, kind=self.RECORD_KIND)


@dataclass(frozen=True)
class TrainJob(JobBase):
    """One training run (``rnnbench.train``).  Sizes left as None take the task's default short setting."""

    IDENTITY: ClassVar[tuple[str, ...]] = ("task", "backend", "cell", "hidden", "seq_len", "layers", "input_size",
                                           "batch", "dtype", "device", "steps", "seed", "budget_s", "stop_at_target",
                                           "depth_walk")
    RECORD_KIND: ClassVar[str] = "training"
    JOB: ClassVar[str] = "train"

    task: str
    backend: str
    cell: str = "lstm"
    hidden: int | None = None
    seq_len: int | None = None
    steps: int | None = None
    seed: int = 0
    batch: int | None = None
    lr: float | None = None
    device: str = "cpu"
    dtype: str = "float32"
    timeout_s: float = SETTINGS.train_timeout_s  # stops (status timeout) after timeout_share of this
    layers: int = 1
    input_size: int | None = None  # width of the input layer's output (the core's input); default hidden
    eval_every: int | None = None
    clip: float = SETTINGS.clip_norm
    forget_bias: float = SETTINGS.forget_bias  # added to an LSTM's forget-gate bias at initialisation
    budget_s: float = 0.0  # seconds of training the run may spend beyond ``steps`` while short of the target
    stop_at_target: bool = False  # end at the first evaluation that meets the task's target (time to quality)
    depth_walk: bool = False  # a run of a DepthJob's walk (the same run on its own is another job, another record)

    def __post_init__(self):
        from . import tasks

        if self.task not in tasks.TASKS:
            raise ConfigError(f"unknown task {self.task!r}; valid: {', '.join(tasks.names())}")
        default = tasks.TASKS[self.task].default
        for name in ("hidden", "seq_len", "steps", "batch", "lr", "eval_every"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(default, name))
        if self.input_size is None:
            object.__setattr__(self, "input_size", self.hidden)

    @property
    def record_fields(self) -> dict:
        return {**super().record_fields, "task": self.task, "steps": self.steps, "seed": self.seed,
                "budget_s": float(self.budget_s), "stop_at_target": self.stop_at_target, "depth_walk": self.depth_walk}

    def validate(self) -> None:
        """Raise ConfigError naming the valid choices (the task was checked on construction)."""
        from . import tasks

        check_common(self.backend, self.cell, self.dtype, self.device, {n: getattr(self, n) for n in
                     ("hidden", "seq_len", "steps", "batch", "layers", "input_size", "eval_every")})
        try:
            tasks.TASKS[self.task].check_seq_len(self.seq_len)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(self.budget_s, (int, float)) or isinstance(self.budget_s, bool) or not self.budget_s >= 0:
            raise ConfigError(f"budget_s must be a number of seconds >= 0, got {self.budget_s!r}")
        for flag in ("stop_at_target", "depth_walk"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be true or false, got {getattr(self, flag)!r}")

    def describe(self) -> str:
        budget = f" or {self.budget_s:.0f} s" if self.budget_s else ""
        until = " until its target" if self.stop_at_target else ""
        return (f"{self.backend} {self.task} {self.cell} T={self.seq_len} H={self.hidden} seed={self.seed} "
                f"steps={self.steps}{budget}{until}")

    def run(self, fresh_process: bool) -> list[dict]:
        from .train import run_training

        return run_training(self)

    def failure(self, status: str, message: str) -> dict:
        from .train import failure_record

        return failure_record(self, status, message)


@dataclass(frozen=True)
class DepthJob(JobBase):
    """How far back one model learns a task (``rnnbench.train.run_depth``): seed 0 trains at each of
    ``seq_lens`` in turn, each run until the task's target or its budget, and stops at the first length
    it misses; seeds 1.. then train at the longest length it reached (the boundary).  Its records: every
    run's training records, the model's gradient profile at the longest length tried (a stability
    record), and one depth record, the verdict."""

    IDENTITY: ClassVar[tuple[str, ...]] = ("task", "backend", "cell", "hidden", "seq_lens", "seeds", "steps",
                                           "budget_s", "layers", "input_size", "batch", "dtype", "device")
    RECORD_KIND: ClassVar[str] = "depth"
    JOB: ClassVar[str] = "depth"

    task: str
    backend: str
    cell: str = "lstm"
    seq_lens: str = "10,25,50,100,200"  # ascending, comma-separated (a string: the identity is hashable)
    seeds: int = 3  # runs at the boundary length, seed 0's included
    steps: int | None = None  # each run's step budget (with budget_s: the larger binds)
    budget_s: float = 0.0
    hidden: int | None = None
    batch: int | None = None
    lr: float | None = None
    eval_every: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    layers: int = 1
    input_size: int | None = None
    timeout_s: float = 8 * SETTINGS.train_timeout_s  # the whole walk in the process executor

    def __post_init__(self):
        first = self.training(self.lengths()[0] if self._lengths_ok() else None, 0)  # fills the task's defaults
        for name in ("hidden", "steps", "batch", "lr", "eval_every", "input_size"):
            object.__setattr__(self, name, getattr(first, name))

    def _lengths_ok(self) -> bool:
        try:
            return bool(self.lengths())
        except (TypeError, ValueError, AttributeError):
            return False

    def lengths(self) -> list[int]:
        return [int(t) for t in str(self.seq_lens).split(",")]

    @property
    def seq_len(self) -> int:
        """The longest length of the walk (what the depth record's seq_len holds)."""
        return self.lengths()[-1]

    def training(self, seq_len: int | None, seed: int) -> TrainJob:
        """The training run at one length and seed: to the target, within the budget."""
        return TrainJob(self.task, self.backend, self.cell, hidden=self.hidden, seq_len=seq_len, steps=self.steps,
                        seed=seed, batch=self.batch, lr=self.lr, device=self.device, dtype=self.dtype,
                        layers=self.layers, input_size=self.input_size, eval_every=self.eval_every,
                        budget_s=self.budget_s, stop_at_target=True, depth_walk=True)

    @property
    def record_fields(self) -> dict:
        return {**super().record_fields, "task": self.task, "seq_lens": self.seq_lens,
                "seeds": self.seeds, "steps": self.steps, "budget_s": float(self.budget_s)}

    def validate(self) -> None:
        if not self._lengths_ok() or self.lengths() != sorted(set(self.lengths())):
            raise ConfigError(f"seq_lens must be ascending lengths separated by commas, got {self.seq_lens!r}")
        if not isinstance(self.seeds, int) or isinstance(self.seeds, bool) or self.seeds < 1:
            raise ConfigError(f"seeds must be a whole number >= 1, got {self.seeds!r}")
        for T in self.lengths():
            self.training(T, 0).validate()

    def describe(self) -> str:
        return f"{self.backend} {self.task} {self.cell} depth over T={self.seq_lens}"

    def run(self, fresh_process: bool) -> list[dict]:
        from .train import run_depth

        return run_depth(self)

    def failure(self, status: str, message: str) -> dict:
        from .train import failure_record

        return {**failure_record(self, status, message), "kind": "depth"}


JOB_TYPES = {cls.JOB: cls for cls in (TimingJob, InstructionJob, TrainJob, DepthJob)}
_BY_RECORD_KIND = {kind: (cls, implied) for cls in JOB_TYPES.values()
                   for kind, implied in {cls.RECORD_KIND: {}, **cls.OTHER_RECORDS}.items()}


_IDENTITY_DEFAULTS = {cls: {f.name: f.default for f in fields(cls)
                            if f.name in cls.IDENTITY and f.default is not MISSING}
                      for cls in JOB_TYPES.values()}


def job_from_dict(d: dict):
    """A job from ``to_dict()`` (``job`` names its type; timing when absent, as older runs wrote)."""
    return JOB_TYPES[d.get("job", "timing")].from_dict(d)


def record_key(record: dict) -> tuple | None:
    """The key of the job that wrote ``record``; None for a record of no known kind."""
    if record.get("kind") not in _BY_RECORD_KIND:
        return None
    cls, implied = _BY_RECORD_KIND[record["kind"]]
    record = {**_IDENTITY_DEFAULTS[cls], **implied, **record}  # a record older than a field measured its default
    return (cls.JOB, *(record.get(f) for f in cls.IDENTITY))
