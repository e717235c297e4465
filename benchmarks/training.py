"""The loss of a short training run of every backend (``rnnbench.train``), same data, same start."""
import numpy as np

from rnnbench.jobs import TrainJob
from rnnbench.train import run_training

from .common import BACKENDS, checked, device, skip_unless_runnable

TASK, STEPS, LAST = "copy", 200, 10  # by step 200 the loss has reached its plateau and begun to leave it


class Training:
    params = (BACKENDS,)
    param_names = ["backend"]
    timeout = 900

    def setup(self, backend):
        job = TrainJob(task=TASK, backend=backend, steps=STEPS, device=device())
        skip_unless_runnable(backend, job.device, job.cell)
        self.records = checked(run_training(job))

    def track_final_loss(self, backend):
        """Mean loss over the last steps: one batch's loss alone varies more than a regression does."""
        return float(np.mean([r["loss"] for r in self.records[-LAST:]]))

    track_final_loss.unit = "loss"
