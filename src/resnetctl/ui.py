"""Rich front ends for library progress hooks."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from resnetctl.data.prepare import PrepareProgress


class PrepareBar(PrepareProgress):
    """A bar per split with images/s and ETA; a line per split when not on a terminal."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
            TaskProgressColumn(), TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(), console=console, disable=not console.is_terminal,
        )
        self.task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def start_split(self, split, total):
        self.task = self.progress.add_task(split, total=total, rate="")

    def advance(self, count):
        self.progress.advance(self.task, count)
        speed = self.progress.tasks[self.task].speed
        if speed:
            self.progress.update(self.task, rate=f"{speed:,.0f} img/s")

    def end_split(self, split, written, skipped):
        if not self.console.is_terminal:
            note = f", skipped {skipped}" if skipped else ""
            self.console.print(f"{split}: {written} images{note}", highlight=False)
