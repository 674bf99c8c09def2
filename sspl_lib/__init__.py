"""sspl: Self-Supervised Predictive Learning (Song et al., CVPR 2022) for sound source localization."""

__version__ = "0.1.0"
