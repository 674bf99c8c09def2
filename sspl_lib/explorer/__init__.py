"""The heatmap explorer: `app` (Explorer, open_explorer), `widgets`, `sources`, `render`."""
