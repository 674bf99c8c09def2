"""Watching a run: what `fit` shows while it trains, the history figures, a live plot in a notebook
(matplotlib's object API: no pyplot state, so a notebook's inline plots keep working)."""

from __future__ import annotations

import io
import time
from pathlib import Path

from tqdm.auto import tqdm


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


class TrainingLog:
    """What `fit` shows while it trains (rank 0): a bar, TensorBoard, `on_event`, a line per epoch, figures."""

    def __init__(self, run_dir: Path, epochs: int, steps: int, *, on_event=None, progress: bool = True,
                 main: bool = True):
        self.run_dir, self.epochs, self.steps, self.progress, self.main = run_dir, epochs, steps, progress, main
        self.on_event = on_event if main else None
        self.board = _board(run_dir) if main else None
        self.bar = None

    def batches(self, batches, epoch: int):
        self.bar = tqdm(batches, total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                        disable=not (self.progress and self.main))
        return self.bar

    def step(self, epoch: int, step: int, loss: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}")
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
        if self.progress:
            print(f"epoch {rec['epoch']}: train {rec['train_loss']:.4f} val {rec['val_loss']:.4f} "
                  f"cIoU {rec['val_ciou']:.3f} AUC {rec['val_auc']:.3f} ({rec['time']:.0f} s)", flush=True)

    def close(self, history: list[dict]) -> None:
        if self.board is not None:
            self.board.close()
        if self.main and history:
            plot_history(history, self.run_dir / "figures")


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
    """A `fit(on_event=...)` callback: step loss and validation per epoch, redrawn at most every `every` s."""

    def __init__(self, *, every: float = 5.0, display: bool = True):
        self.steps: list[tuple[float, float]] = []  # (epoch + fraction, loss)
        self.history: list[dict] = []
        self.every, self._last = every, 0.0
        self.handle = None
        if display:
            from IPython.display import display as show

            self.handle = show(self._image(), display_id=True)

    def __call__(self, event: dict) -> None:
        if event["kind"] == "step":
            self.steps.append((event["epoch"] - 1 + event["step"] / event["steps"], event["loss"]))
            if time.monotonic() - self._last < self.every:
                return
        else:
            self.history = event["history"]
        self._redraw()

    def figure(self):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 3.2))
        ax1, ax2 = fig.subplots(1, 2)
        if self.steps:
            ax1.plot(*zip(*self.steps), lw=0.8, alpha=0.6, label="train loss (step)")
        ep = [h["epoch"] for h in self.history]
        if ep:
            ax1.plot(ep, [h["val_loss"] for h in self.history], "o-", label="val loss")
            ax2.plot(ep, [h["val_ciou"] for h in self.history], "o-", label="val cIoU@0.5")
            ax2.plot(ep, [h["val_auc"] for h in self.history], "s-", label="val AUC")
        ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.grid(alpha=0.3)
        ax2.set_xlabel("epoch"), ax2.set_ylabel("validation score"), ax2.set_ylim(0, 1), ax2.grid(alpha=0.3)
        for ax in (ax1, ax2):
            if ax.lines:
                ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def _image(self):
        from IPython.display import Image

        buf = io.BytesIO()
        self.figure().savefig(buf, format="png", dpi=80)
        return Image(buf.getvalue())

    def _redraw(self) -> None:
        self._last = time.monotonic()
        if self.handle is not None:
            self.handle.update(self._image())
