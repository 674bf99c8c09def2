"""The explorer's widgets, layout and event wiring; they know nothing of models or data but names."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import ipywidgets as W

from .sources import CENTRE_PRIOR

OWN_CLIP = -1
SORTS = (("file order", "none"), ("cIoU, worst first", "worst"), ("cIoU, best first", "best"))
COLORMAPS = ("jet", "turbo", "inferno", "viridis", "magma", "gray")
STYLE = {"description_width": "70px"}


class ExplorerUI:
    """The explorer's widgets; `cycles`: {model: PCM cycles} in selector order, the primary first. While
    `busy`, widget events call nothing."""

    def __init__(self, *, splits, split: str, cycles: dict[str, int], primary: str, on_split: Callable,
                 on_order: Callable, on_view: Callable, on_other_clip: Callable, on_scene_sound: Callable | None = None,
                 labels: dict[str, str] | None = None):
        self.cycles, self.primary = dict(cycles), primary
        self.labels = {n: (labels or {}).get(n, n) for n in self.cycles}  # the chooser's text (e.g. "unfinished")
        self.on_split, self.on_order, self.on_view, self.on_other_clip = on_split, on_order, on_view, on_other_clip
        self.on_scene_sound = on_scene_sound
        self.busy = False
        self._navigation(splits, split)
        self._view_controls()
        self._sound()
        self._wire()
        self.widget = self._layout()
        self.show_swap(False)
        for w, cls in ((self.widget, "sspl-explorer"), (self.image, "sspl-view"), (self.sample, "sspl-sample"),
                       (self.spectrogram, "sspl-spectrogram"), (self.info, "sspl-info"), (self.swap_image, "sspl-swap")):
            w.add_class(cls)  # stable hooks for the browser test

    def _navigation(self, splits, split: str) -> None:
        self.split = W.Dropdown(options=list(splits), value=split, description="split", style=STYLE,
                                layout=W.Layout(width="220px"))
        self.sort = W.Dropdown(options=SORTS, value="none", description="order", style=STYLE,
                               layout=W.Layout(width="240px"))
        self.sample = W.IntSlider(value=0, min=0, max=0, description="sample", continuous_update=False, style=STYLE,
                                  layout=W.Layout(width="380px"))
        self.play = W.Play(value=0, min=0, max=0, step=1, interval=1200, description="play")
        self.play.observe(self._on_play, "value")  # every step of the player moves the sample, in the kernel
        self.sample.observe(self._sample_to_play, "value")  # and the player goes on from the sample shown
        self.sample_id = W.HTML()

    def _view_controls(self) -> None:
        names, primary = list(self.cycles), self.primary
        runs = [n for n in names if n not in (CENTRE_PRIOR, primary)]
        contrast = [n for n in runs if (self.cycles[n] > 0) != (self.cycles[primary] > 0)]  # w/ vs w/o PCM
        default = [primary] + (contrast or runs)[:1] + ([CENTRE_PRIOR] if CENTRE_PRIOR in names else [])
        self.model_select = W.SelectMultiple(options=[(self.labels[n], n) for n in names], value=tuple(default),
                                             description="models",
                                             rows=min(max(len(names), 2), 5), style=STYLE,
                                             layout=W.Layout(width="300px"))
        self.protocol = W.ToggleButtons(options=["fixed", "median"], value="fixed", style={"button_width": "80px"},
                                        tooltips=["mask = normalized map >= threshold (SSPL)",
                                                  "mask = top half of the map (LVS / EZ-VSL)"])
        self.threshold = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="threshold",
                                       continuous_update=False, readout_format=".2f", style=STYLE)
        self.cycle = W.IntSlider(value=0, min=0, max=0, description="PCM cycle", continuous_update=False, style=STYLE)
        self.colormap = W.Dropdown(options=COLORMAPS, value="jet", description="colormap", style=STYLE,
                                   layout=W.Layout(width="220px"))
        self.opacity = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=False, readout_format=".2f", style=STYLE)

    def _sound(self) -> None:
        lay = W.Layout
        self.audio_source = W.Dropdown(options=[("this sample's own clip", OWN_CLIP)], value=OWN_CLIP,
                                       description="sound", style={"description_width": "50px"},
                                       layout=lay(width="300px"))
        self.other_clip = W.Button(description="listen with another clip", icon="random",
                                   tooltip="a clip of another class: the heatmap this frame gets with that sound",
                                   layout=lay(width="200px"))
        self.own_clip = W.Button(description="own clip", layout=lay(width="100px"))
        self.scene_sound = W.Dropdown(options=[], description="sound of", style={"description_width": "60px"},
                                      tooltip="which object of this scene is heard", layout=lay(width="300px"))
        self.swap_image = W.Image(format="png")
        self.swap_title = W.HTML()
        self.player = W.Audio(value=b"", format="wav", autoplay=False, loop=False, controls=True)
        self.image = W.Image(format="png")
        self.spectrogram = W.Image(format="png")
        self.info = W.HTML()
        self.header = W.HTML()

    def _wire(self) -> None:
        for w, fn in ((self.split, self._on_split), (self.sort, self._on_order), (self.protocol, self._on_order),
                      (self.threshold, self._on_order), (self.model_select, self._on_models),
                      (self.sample, self._on_view), (self.cycle, self._on_view), (self.colormap, self._on_view),
                      (self.opacity, self._on_view), (self.audio_source, self._on_view)):
            w.observe(fn, "value")
        self.scene_sound.observe(self._on_scene_sound, "value")
        self.other_clip.on_click(lambda _: self.on_other_clip())
        self.own_clip.on_click(lambda _: setattr(self.audio_source, "value", OWN_CLIP))
        self._sync_cycle_slider()

    def _layout(self) -> W.VBox:
        label = W.Label("protocol", layout=W.Layout(width="70px", justify_content="flex-end", margin="0 8px 0 0"))
        controls = W.HBox([W.VBox([self.model_select]), W.VBox([W.HBox([label, self.protocol]), self.threshold,
                                                                self.cycle]), W.VBox([self.colormap, self.opacity])])
        sound = W.VBox([self.spectrogram, self.player, self.scene_sound, self.audio_source,
                        W.HBox([self.other_clip, self.own_clip])])
        self.swap_row = W.VBox([self.swap_title, self.swap_image])
        return W.VBox([self.header, W.HBox([self.split, self.sort, self.play, self.sample]), self.sample_id,
                       controls, W.HBox([self.image, sound]), self.swap_row, self.info])

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def selected(self) -> list[str]:
        chosen = set(self.model_select.value)
        return [n for n in self.cycles if n in chosen]

    def show_swap(self, on: bool) -> None:
        """Show (swap split) or hide the "sound of" selector and the row of maps, one per object's sound."""
        for w in (self.scene_sound, self.swap_row):
            w.layout.display = None if on else "none"

    @contextmanager
    def quiet(self):
        was, self.busy = self.busy, True
        try:
            yield
        finally:
            self.busy = was

    def close(self) -> None:
        for w in vars(self).values():
            if isinstance(w, W.Widget):
                w.close()

    # ------------------------------------------------------------------ events
    def _on_play(self, change) -> None:
        # The page changes the player's value while playing (a step) or, not playing, when its stop button
        # resets it to the first sample (ipywidgets' Play): that reset moves nothing, the player is put back
        # on the sample shown. Only the kernel moves the slider, so no stale value races a newer one.
        if "value" in self.play._property_lock and not self.play.playing:
            self.play.value = self.sample.value
            return
        if self.sample.value != change["new"] and self.sample.min <= change["new"] <= self.sample.max:
            self.sample.value = change["new"]

    def _sample_to_play(self, change) -> None:
        if self.play.value != change["new"] and self.play.min <= change["new"] <= self.play.max:
            self.play.value = change["new"]

    def _on_split(self, change) -> None:
        self.on_split(change["new"])

    def _on_order(self, change) -> None:
        if not self.busy:
            self.threshold.disabled = self.protocol.value == "median"
            self.on_order(change["owner"])

    def _on_models(self, change) -> None:
        if self.busy:
            return
        if not change["new"]:  # keep one model shown
            self.model_select.value = (self.primary,)
            return
        self._sync_cycle_slider()
        self.on_order(self.model_select)

    def _on_scene_sound(self, change) -> None:
        if not self.busy and change["new"] is not None and self.on_scene_sound is not None:
            self.on_scene_sound(change["new"])

    def _on_view(self, change) -> None:
        if not self.busy:
            self.on_view()

    def _sync_cycle_slider(self) -> None:
        cycles = max((self.cycles[n] for n in self.selected), default=0)
        with self.quiet():
            at_end = self.cycle.value == self.cycle.max
            self.cycle.max = max(cycles, 0)
            self.cycle.value = cycles if at_end or self.cycle.value > cycles else self.cycle.value
            self.cycle.disabled = cycles == 0
            self.cycle.tooltip = "heatmap after the PCM initialization (0) and each cycle" if cycles \
                else "no model with PCM selected"
