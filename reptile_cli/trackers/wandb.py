"""Weights & Biases: offline by default (no account, no network: ``wandb sync RUN_DIR/wandb/offline-run-*`` later
uploads it), the resolved config, metrics by iteration, the plots as images, the checkpoint and ``eval.json`` as
an artifact. A sweep's jobs share the W&B group named after the sweep directory. ``logger.wandb.mode=online``
(with ``WANDB_API_KEY``) logs to the server directly."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from reptile_cli.trackers import RunInfo

EXIT = {"completed": 0, "stopped": 3, "failed": 1}


def run_records(run_file: Path) -> list:
    """The records of one W&B run file (``run-<id>.wandb``), decoded with wandb's own protocol buffers
    (``wandb.proto.wandb_internal_pb2.Record``). The file is wandb's log format: a 7-byte header (``:W&B``,
    magic, version), then 32 KiB blocks of chunks, each with a 7-byte header (CRC-32, length, type: full,
    first, middle, last); a block's last bytes are padding when fewer than 7 remain. A file cut short (its
    writer killed) yields the records before the cut."""
    from wandb.proto import wandb_internal_pb2

    data = Path(run_file).read_bytes()
    if data[:4] != b":W&B":
        return []
    pos, block, pending, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        if len(chunk) < length:
            break
        pos += 7 + length
        if kind in (2, 3):
            pending += chunk
            continue
        if kind not in (1, 4):
            continue
        whole, pending = (chunk if kind == 1 else pending + chunk), b""
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(whole)
        except Exception:  # noqa: BLE001 - a torn last record
            break
        out.append(record)
    return out


def history(run_dir: Path, run_id: str | None = None) -> dict[str, list[tuple[int, float]]]:
    """Every scalar the offline sessions of a run logged (``RUN_DIR/wandb/offline-run-*/run-*.wandb``, of
    ``run_id`` when given), as ``key -> [(step, value), ...]`` in the order logged."""
    out: dict[str, list[tuple[int, float]]] = {}
    pattern = f"wandb/offline-run-*/run-{run_id}.wandb" if run_id else "wandb/offline-run-*/run-*.wandb"
    for f in sorted(Path(run_dir).glob(pattern)):
        for record in run_records(f):
            if record.WhichOneof("record_type") != "history":
                continue
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            step = items.pop("_step", record.history.step.num)
            for key, value in items.items():
                if not key.startswith("_") and isinstance(value, (int, float)):
                    out.setdefault(key, []).append((step, value))
    return out


class WandbTracker:
    """``logger.wandb.mode`` (offline, online, disabled), ``project``, ``entity``."""

    name = "wandb"

    def __init__(self, section):
        self.mode = section.get("mode") or "offline"
        self.project = section.get("project") or "reptile"
        self.entity = section.get("entity")

    def durable_last_step(self, info: RunInfo) -> int | None:
        """The last step an earlier offline session of this run actually wrote to its files: a session killed
        with -9 loses what wandb's service had not written yet, and the resume logs those steps again (from
        ``metrics.jsonl``). None online (the server holds the run)."""
        if self.mode != "offline" or not info.resumed_run_id:
            return None
        steps = [s for series in history(info.run_dir, info.resumed_run_id).values() for s, _ in series]
        return max(steps, default=-1)

    def start(self, info: RunInfo) -> str:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(mode=self.mode, dir=str(info.run_dir), project=self.project, entity=self.entity,
                              group=info.group, job_type="train", name=info.job, config=info.config,
                              id=info.resumed_run_id, resume="allow" if info.resumed_run_id else None,
                              reinit="create_new", settings=wandb.Settings(silent=True, console="off"))
        return self.run.id

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)
        self.last_step = step

    def finish(self, state: str, artifacts: list[Path], images: list[Path], summary: dict) -> None:
        if images:  # at the last step (W&B steps never go back)
            self.run.log({f"plots/{p.stem}": self.wandb.Image(str(p)) for p in images},
                         step=getattr(self, "last_step", None))
        if artifacts:
            artifact = self.wandb.Artifact(f"run-{self.run.id}", type="model")
            for path in artifacts:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=EXIT.get(state, 0))
