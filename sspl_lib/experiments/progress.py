"""Watching runs: what `fit` shows while it trains, one line per epoch with an ETA (also for runs trained in
other processes: `HistoryWatcher` reads their history files), the history figures, a live plot in a notebook
(matplotlib's object API: no pyplot state, so a notebook's inline plots keep working)."""

from __future__ import annotations

import io
import sys
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..progress_lines import ProgressLines, duration
from .runs import CheckpointError, read_history


def history_figures(history: list[dict]) -> dict:
    """{"loss": Figure, "val_ciou": Figure} of a history."""
    from matplotlib.figure import Figure

    ep = [h["epoch"] for h in history]
    figs = {}
    for name, keys, ylabel in (("loss", ("train_loss", "val_loss"), "SimSiam loss"),
                               ("val_ciou", ("val_ciou", "val_auc"), "validation score")):
        fig = Figure(figsize=(5, 3.2))
        ax = fig.subplots()
        for k in keys:
            ax.plot(ep, [h[k] for h in history], marker="o", label=k)
        ax.set_xlabel("epoch"), ax.set_ylabel(ylabel), ax.legend(), ax.grid(alpha=0.3)
        fig.tight_layout()
        figs[name] = fig
    return figs


def plot_history(history: list[dict], out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in history_figures(history).items():
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=100)
    return paths


def epoch_line(label: str, rec: dict, epochs: int, eta: str) -> str:
    """`[label] epoch e/E: losses, val cIoU / AUC (seconds; ETA ...)`: what every epoch of every run prints."""
    stop = ", early stop" if rec.get("stopped") else ""
    return (f"[{label}] epoch {rec['epoch']}/{epochs}: train {rec['train_loss']:.4f} val {rec['val_loss']:.4f} "
            f"cIoU {rec['val_ciou']:.3f} AUC {rec['val_auc']:.3f} ({duration(rec['time'])}{stop}; ETA {eta})")


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


class TrainingLog:
    """What `fit` shows while it trains (rank 0): step progress (a bar on a terminal, else a line every 30 s),
    TensorBoard, `on_event`, a line per epoch with the run's ETA, figures."""

    def __init__(self, run_dir: Path, epochs: int, steps: int, *, on_event=None, progress: bool = True,
                 main: bool = True):
        self.run_dir, self.epochs, self.steps, self.progress, self.main = run_dir, epochs, steps, progress, main
        self.on_event = on_event if main else None
        self.board = _board(run_dir) if main else None
        self.bar = self.lines = None
        self.times: list[float] = []  # seconds of the epochs trained by this process

    def batches(self, batches, epoch: int):
        show = self.progress and self.main
        tty = sys.stderr.isatty()
        self.bar = tqdm(batches, total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                        disable=not (show and tty))
        self.lines = ProgressLines(self.run_dir.name, f"epoch {epoch + 1}/{self.epochs}", self.steps, unit="steps",
                                   every=30.0, enabled=show and not tty)
        return self.bar

    def step(self, epoch: int, step: int, loss: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}")
        self.lines.update(note=f"loss {loss:.4f}")
        if self.board is not None:
            self.board.add_scalar("train/loss_step", loss, epoch * self.steps + step + 1)
        if self.on_event is not None:
            self.on_event({"kind": "step", "epoch": epoch + 1, "step": step + 1, "steps": self.steps, "loss": loss})

    def epoch(self, rec: dict, history: list[dict]) -> None:
        if self.board is not None:
            for key in ("train_loss", "val_loss", "val_ciou", "val_auc", "lr"):
                self.board.add_scalar(f"epoch/{key}", rec[key], rec["epoch"])
            self.board.flush()
        if self.on_event is not None:
            self.on_event({"kind": "epoch", "record": rec, "history": list(history)})
        self.times.append(rec["time"])
        if self.progress:
            left = 0 if rec.get("stopped") else self.epochs - rec["epoch"]
            print(epoch_line(self.run_dir.name, rec, self.epochs, duration(left * _mean(self.times))), flush=True)

    def close(self, history: list[dict]) -> None:
        if self.board is not None:
            self.board.close()
        if self.main and history:
            plot_history(history, self.run_dir / "figures")


class HistoryWatcher:
    """Prints each run's new epochs as they land in its history.json (runs trained in this process or in
    others), with the run's ETA and that of all of them (`workers` at a time); `on_event` gets each as an
    epoch event tagged with the run's label (a live plot). A context manager: a thread polls every `every` s."""

    def __init__(self, runs: dict[str, tuple[Path, int]], *, workers: int = 1, on_event=None, every: float = 2.0):
        self.runs, self.workers, self.on_event, self.every = dict(runs), max(1, workers), on_event, every
        self.seen = {k: len(self._read(d)) for k, (d, _) in self.runs.items()}  # epochs there before (a resume)
        self.times: dict[str, list[float]] = {k: [] for k in self.runs}
        self.ended: set[str] = set()
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _read(run_dir: Path) -> list[dict]:
        try:
            return read_history(run_dir)
        except (OSError, CheckpointError):  # being replaced, or unreadable: the next poll reads it
            return []

    def left(self, label: str) -> int:
        return 0 if label in self.ended else max(0, self.runs[label][1] - self.seen[label])

    def eta(self, label: str) -> tuple[str, str]:
        """(this run's ETA, all runs' ETA): remaining epochs x mean epoch time, the runs `workers` at a time."""
        every = _mean(t for ts in self.times.values() for t in ts)
        own = _mean(self.times[label]) if self.times[label] else every
        open_runs = [k for k in self.runs if self.left(k)]
        total = sum(self.left(k) * (_mean(self.times[k]) if self.times[k] else every) for k in open_runs)
        return duration(self.left(label) * own), duration(total / max(1, min(self.workers, len(open_runs))))

    def finished(self, label: str) -> None:
        """A run that ended (trained, failed or refused): nothing left of it in the ETA."""
        self.poll()
        with self._lock:
            self.ended.add(label)

    def poll(self) -> None:
        with self._lock:
            for label, (run_dir, epochs) in self.runs.items():
                history = self._read(run_dir)
                for rec in history[self.seen[label]:]:
                    self.seen[label] = rec["epoch"]
                    self.times[label].append(rec["time"])
                    if rec.get("stopped"):
                        self.ended.add(label)
                    run, every = self.eta(label)
                    print(epoch_line(label, rec, epochs, f"{run}, all runs {every}"), flush=True)
                    if self.on_event is not None:
                        self.on_event({"kind": "epoch", "run": label, "record": rec, "history": history[:rec["epoch"]]})

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.poll()

    def __enter__(self) -> "HistoryWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()


def _board(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


def history_table(history: list[dict]) -> str:
    """One line per epoch: train / val loss, val cIoU@0.5 and AUC, learning rate, seconds."""
    lines = [f"{'epoch':>5} {'train':>8} {'val':>8} {'cIoU':>6} {'AUC':>6} {'lr':>8} {'s':>6}"]
    for h in history:
        lines.append(f"{h['epoch']:>5} {h['train_loss']:8.4f} {h['val_loss']:8.4f} {h['val_ciou']:6.3f} "
                     f"{h['val_auc']:6.3f} {h['lr']:8.1e} {h['time']:6.0f}" + ("  (early stop)" if h.get("stopped") else ""))
    return "\n".join(lines)


class LivePlot:
    """A `fit(on_event=...)` / `train_methods(on_event=...)` callback: the step loss of the run training in this
    process and every run's validation per epoch (events tagged with a `run` label), redrawn at most every
    `every` s."""

    def __init__(self, *, every: float = 5.0, display: bool = True):
        self.steps: list[tuple[float, float]] = []  # (epoch + fraction, loss) of the latest run with steps
        self.histories: dict[str, list[dict]] = {}
        self.history: list[dict] = []  # the history of the latest epoch event
        self.every, self._last, self._step_run = every, 0.0, None
        self.handle = None
        if display:
            from IPython.display import display as show

            self.handle = show(self._image(), display_id=True)

    def __call__(self, event: dict) -> None:
        run = event.get("run", "run")
        if event["kind"] == "step":
            if run != self._step_run:
                self.steps, self._step_run = [], run
            self.steps.append((event["epoch"] - 1 + event["step"] / event["steps"], event["loss"]))
            if time.monotonic() - self._last < self.every:
                return
        else:
            self.history = self.histories[run] = event["history"]
        self._redraw()

    def figure(self):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 3.2))
        ax1, ax2 = fig.subplots(1, 2)
        if self.steps:
            ax1.plot(*zip(*self.steps), lw=0.8, alpha=0.6, label=f"train loss (step){self._tag(self._step_run)}")
        for run, history in self.histories.items():
            ep, tag = [h["epoch"] for h in history], self._tag(run)
            ax1.plot(ep, [h["val_loss"] for h in history], "o-", label=f"val loss{tag}")
            ax2.plot(ep, [h["val_ciou"] for h in history], "o-", label=f"val cIoU@0.5{tag}")
            if len(self.histories) == 1:
                ax2.plot(ep, [h["val_auc"] for h in history], "s-", label="val AUC")
        ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.grid(alpha=0.3)
        ax2.set_xlabel("epoch"), ax2.set_ylabel("validation score"), ax2.set_ylim(0, 1), ax2.grid(alpha=0.3)
        for ax in (ax1, ax2):
            if ax.lines:
                ax.legend(fontsize=7)
        fig.tight_layout()
        return fig

    def _tag(self, run) -> str:
        return f" {run}" if len(self.histories) > 1 and run else ""

    def _image(self):
        from IPython.display import Image

        buf = io.BytesIO()
        self.figure().savefig(buf, format="png", dpi=80)
        return Image(buf.getvalue())

    def _redraw(self) -> None:
        self._last = time.monotonic()
        if self.handle is not None:
            self.handle.update(self._image())
