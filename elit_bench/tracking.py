"""Where a run's numbers and images go: its TensorBoard, and Weights & Biases for those who use it.

`Tracker(run_dir, logger=...)` writes TensorBoard events to
`run_dir/tb` always; `logger: wandb` (train config) also logs to W&B, which
is optional (`pip install wandb`) and honours its own settings
(`WANDB_MODE=offline` works without network; the offline run lands under
`run_dir/wandb`). Training scalars, evaluation metrics and sample grids all
go through it, so they sit side by side in one run. Each writer's event file
ends in a random token: TensorBoard names files by time, host and pid, which
two containers (same host name, pid 1) starting in the same second share.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import numpy as np

TB_DIR = "tb"


class Tracker:
    def __init__(self, run_dir, logger: str = "tensorboard", config: dict | None = None, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        run_dir = Path(run_dir)
        self.tb = SummaryWriter(str(run_dir / TB_DIR), purge_step=purge_step, filename_suffix=f".{uuid.uuid4().hex[:8]}")
        self.wandb = None
        if logger == "wandb":
            import wandb  # resolve_config made sure it is installed

            # one W&B run per run directory, resumed when training continues
            run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
            self.wandb = wandb.init(project="elit-bench", name=run_dir.parent.name or run_dir.name, id=run_id,
                                    resume="allow", dir=str(run_dir), config=config or {})

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.tb.add_scalar(tag, value, step)
        if self.wandb is not None:
            self.wandb.log(dict(values), step=step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 image."""
        self.tb.add_image(tag, image, step, dataformats="HWC")
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(image)}, step=step)

    def close(self) -> None:
        self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
