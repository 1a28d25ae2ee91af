"""MLflow: params from the resolved config, metrics by iteration, the checkpoint, ``eval.json`` and the plots as
artifacts. ``logger.mlflow.tracking_uri`` points at a server (``http://host:5000``) or a store; by default a
local file store beside the run, ``<run's parent>/mlruns`` (a single run: ``runs/<name>/mlruns``; a sweep job:
``<sweep>/mlruns``, so a sweep's jobs are one store, tagged with the sweep). MLflow 3 keeps its file store in
maintenance mode: this tool opts in to it for ``file:`` URIs (``MLFLOW_ALLOW_FILE_STORE``); give
``tracking_uri=sqlite:///PATH`` (with SQLAlchemy installed) or a server for MLflow's newer features.

A server that does not answer costs one warning, not the run: requests are not retried
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``) and time out after 10 s unless those variables are set."""

from __future__ import annotations

import os
import time
from pathlib import Path

from reptile_cli.trackers import RunInfo
from reptile_cli.trackers.tensorboard import _flat

STATUS = {"completed": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}


class MLflowTracker:
    """``logger.mlflow.tracking_uri`` (default: a file store beside the run) and ``experiment`` (default: the
    run's ``name``)."""

    name = "mlflow"

    def __init__(self, section):
        self.uri = section.get("tracking_uri") if section is not None else None
        self.experiment = section.get("experiment") if section is not None else None

    def start(self, info: RunInfo) -> str:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        uri = self.uri or (info.run_dir.parent / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        if info.resumed_run_id:
            self.run_id = info.resumed_run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return self.run_id
        name = self.experiment or info.name
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found is not None else self.client.create_experiment(name)
        tags = {"reptile.run_dir": str(info.run_dir.resolve()), "reptile.job": info.job}
        if info.group:
            tags["reptile.sweep"] = info.group
        run = self.client.create_run(experiment, run_name=f"{info.group}/{info.job}" if info.group else info.job,
                                     tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, str(v)[:500]) for k, v in _flat(info.config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        return self.run_id

    def log(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in scalars.items()])

    def finish(self, state: str, artifacts: list[Path], images: list[Path], summary: dict) -> None:
        for path in [*artifacts, *images]:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status=STATUS.get(state, "FINISHED"))
