"""Experiments: run folders (`runs`), training (`train`, `pretrain`), evaluation (`evaluate`), studies (`runner`), reporting (`report`), live progress (`progress`)."""
