"""A rich progress bar with the iteration rate and the latest metrics (nothing at all when disabled)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second, as rich estimates it over its recent window."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:8.1f}/s" if task.speed else "       -/s")


class Bar:
    """Handle yielded by :func:`progress_bar`; ``advance`` is a no-op when the bar is disabled."""

    def __init__(self, progress: Progress | None = None, task_id=None):
        self.progress, self.task_id = progress, task_id

    def advance(self, metrics: str | None = None, steps: int = 1) -> None:
        if self.progress is not None:
            fields = {} if metrics is None else {"metrics": metrics}
            self.progress.update(self.task_id, advance=steps, **fields)


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True, completed: int = 0):
    """Context manager yielding a :class:`Bar`: done/total, rate, elapsed, remaining, latest metrics (stderr)."""
    if not enabled:
        yield Bar()
        return
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                        TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(),
                        TextColumn("{task.fields[metrics]}"), console=Console(stderr=True))
    with progress:
        yield Bar(progress, progress.add_task(description, total=total, completed=completed, metrics=""))
