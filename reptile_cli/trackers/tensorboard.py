"""TensorBoard: event files under ``RUN_DIR/tensorboard`` (``torch.utils.tensorboard``, the ``tensorboard``
package), one scalar per metric and step, the resolved config as text and as hyperparameters with the final
validation metric, the run's plots as images at the end. Point TensorBoard at a sweep directory to see its jobs
side by side (``tensorboard --logdir multirun/<name>/<time>``)."""

from __future__ import annotations

from pathlib import Path

from reptile_cli.trackers import RunInfo


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


class TensorBoardTracker:
    """``logger.tensorboard.log_dir``: where the event files go (default ``RUN_DIR/tensorboard``)."""

    name = "tensorboard"

    def __init__(self, section):
        self.log_dir = section.get("log_dir") if section is not None else None
        self.writer = None

    def start(self, info: RunInfo) -> str:
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        self.info = info
        log_dir = Path(self.log_dir) if self.log_dir else info.run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(log_dir))
        if info.resumed_run_id is None:
            text = yaml.safe_dump(info.config, sort_keys=False)
            self.writer.add_text("config", "```\n" + text + "```", global_step=0)
        return str(log_dir)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def finish(self, state: str, artifacts: list[Path], images: list[Path], summary: dict) -> None:
        import numpy as np
        from PIL import Image
        from torch.utils.tensorboard.summary import hparams

        metrics = {}
        if summary.get("metric") is not None:
            metrics[f"final/val_{summary['metric']}"] = float(summary["mean"])
        flat = {k: v for k, v in _flat(self.info.config).items() if k.startswith(("trainer.", "episode.", "model."))
                or k in ("seed", "dtype", "dataset.name")}
        for summary_pb in hparams(flat, metrics):
            self.writer.file_writer.add_summary(summary_pb)
        for key, value in metrics.items():
            self.writer.add_scalar(key, value)
        for png in images:
            with Image.open(png) as img:
                self.writer.add_image(f"plots/{png.stem}", np.asarray(img.convert("RGB")), dataformats="HWC")
        self.writer.add_text("state", state)
        self.writer.close()
