"""The explorer's widgets: their construction and layout, and the event handlers that tie them to the view."""

from __future__ import annotations

import ipywidgets as W

from .explorer_sources import CENTRE_PRIOR

OWN_CLIP = -1
SORTS = (("file order", "none"), ("cIoU, worst first", "worst"), ("cIoU, best first", "best"))
COLORMAPS = ("jet", "turbo", "inferno", "viridis", "magma", "gray")


class ExplorerWidgets:
    """Widgets and events of `sspl_lib.explorer.Explorer` (a mixin: the state and view live there)."""

    # ------------------------------------------------------------------ widgets
    def _build_widgets(self, split: str) -> None:
        lay, st = W.Layout, {"description_width": "70px"}
        names = list(self.models)
        runs = [n for n in names if n not in (CENTRE_PRIOR, self.primary)]
        contrast = [n for n in runs if self.models[n].has_pcm != self.models[self.primary].has_pcm]  # w/ vs w/o PCM
        default = [self.primary] + (contrast or runs)[:1] + ([CENTRE_PRIOR] if CENTRE_PRIOR in names else [])
        self.split = W.Dropdown(options=list(self.splits), value=split, description="split", style=st,
                                layout=lay(width="220px"))
        self.sort = W.Dropdown(options=SORTS, value="none", description="order", style=st, layout=lay(width="240px"))
        self.sample = W.IntSlider(value=0, min=0, max=0, description="sample", continuous_update=False, style=st,
                                  layout=lay(width="380px"))
        self.play = W.Play(value=0, min=0, max=0, step=1, interval=1200, description="play")
        W.jslink((self.play, "value"), (self.sample, "value"))  # smooth in the browser ...
        self.play.observe(self._on_play, "value")  # ... and the kernel sees every step too
        self.sample_id = W.HTML()
        self.model_select = W.SelectMultiple(options=names, value=tuple(default), description="models",
                                             rows=min(max(len(names), 2), 5), style=st, layout=lay(width="300px"))
        self.protocol = W.ToggleButtons(options=["fixed", "median"], value="fixed", style={"button_width": "80px"},
                                        tooltips=["mask = normalized map >= threshold (SSPL)",
                                                  "mask = top half of the map (LVS / EZ-VSL)"])
        self.threshold = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="threshold",
                                       continuous_update=False, readout_format=".2f", style=st)
        self.cycle = W.IntSlider(value=0, min=0, max=0, description="PCM cycle", continuous_update=False, style=st)
        self.colormap = W.Dropdown(options=COLORMAPS, value="jet", description="colormap", style=st,
                                   layout=lay(width="220px"))
        self.opacity = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="opacity",
                                     continuous_update=False, readout_format=".2f", style=st)
        self.audio_source = W.Dropdown(options=[("this sample's own clip", OWN_CLIP)], value=OWN_CLIP,
                                       description="sound", style={"description_width": "50px"},
                                       layout=lay(width="300px"))
        self.other_clip = W.Button(description="listen with another clip", icon="random",
                                   tooltip="a clip of another class: the heatmap this frame gets with that sound",
                                   layout=lay(width="200px"))
        self.own_clip = W.Button(description="own clip", layout=lay(width="100px"))
        self.player = W.Audio(value=b"", format="wav", autoplay=False, loop=False, controls=True)
        self.image = W.Image(format="png")
        self.spectrogram = W.Image(format="png")
        self.info = W.HTML()
        self.header = W.HTML()
        for w, fn in ((self.split, self._on_split), (self.sort, self._on_order), (self.protocol, self._on_order),
                      (self.threshold, self._on_order), (self.model_select, self._on_models),
                      (self.sample, self._on_view), (self.cycle, self._on_view), (self.colormap, self._on_view),
                      (self.opacity, self._on_view), (self.audio_source, self._on_view)):
            w.observe(fn, "value")
        self.other_clip.on_click(lambda _: self.pick_other_clip())
        self.own_clip.on_click(lambda _: setattr(self.audio_source, "value", OWN_CLIP))
        self._sync_cycle_slider()
        protocol = W.HBox([W.Label("protocol", layout=lay(width="70px", justify_content="flex-end", margin="0 8px 0 0")),
                           self.protocol])
        controls = W.HBox([W.VBox([self.model_select]), W.VBox([protocol, self.threshold, self.cycle]),
                           W.VBox([self.colormap, self.opacity])])
        sound = W.VBox([self.spectrogram, self.player, self.audio_source, W.HBox([self.other_clip, self.own_clip])])
        self.widget = W.VBox([self.header, W.HBox([self.split, self.sort, self.play, self.sample]), self.sample_id,
                              controls, W.HBox([self.image, sound]), self.info])
        for w, cls in ((self.widget, "sspl-explorer"), (self.image, "sspl-view"), (self.sample, "sspl-sample"),
                       (self.spectrogram, "sspl-spectrogram"), (self.info, "sspl-info")):
            w.add_class(cls)  # stable hooks for the browser test

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ events
    def _on_play(self, change) -> None:
        # A step made in the browser has already moved the slider there (jslink), and the slider reports its
        # own value; writing that step back from here would race with newer browser values (a stale value
        # bounced back to the page). So follow only changes made from Python (scripts, tests).
        if "value" in self.play._property_lock:
            return
        if self.sample.value != change["new"] and self.sample.min <= change["new"] <= self.sample.max:
            self.sample.value = change["new"]

    def _on_split(self, change) -> None:
        self._load_split(change["new"])

    def _on_order(self, change) -> None:
        if self._busy:
            return
        self.threshold.disabled = self.protocol.value == "median"
        keep = self.current_index
        self._busy = True
        try:
            self._reorder()
            if change["owner"] is self.sort and self.sort.value != "none":
                self.sample.value = 0  # the worst (best) sample first
            else:
                self.goto(keep)  # same sample, new position
        finally:
            self._busy = False
        self.refresh()

    def _on_models(self, change) -> None:
        if self._busy:
            return
        if not change["new"]:  # keep one model shown
            self.model_select.value = (self.primary,)
            return
        self._sync_cycle_slider()
        self._on_order({"owner": self.model_select})

    def _on_view(self, change) -> None:
        if not self._busy:
            self.refresh()

    def _sync_cycle_slider(self) -> None:
        cycles = max((self.models[n].cycles for n in self.selected), default=0)
        self._busy, was = True, self._busy
        try:
            at_end = self.cycle.value == self.cycle.max
            self.cycle.max = max(cycles, 0)
            self.cycle.value = cycles if at_end or self.cycle.value > cycles else self.cycle.value
            self.cycle.disabled = cycles == 0
            self.cycle.tooltip = "heatmap after the PCM initialization (0) and each cycle" if cycles \
                else "no model with PCM selected"
        finally:
            self._busy = was
