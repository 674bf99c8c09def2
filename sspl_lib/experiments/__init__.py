"""Experiments: run folders (`runs`), training (`train`, `pretrain`), evaluation (`evaluate`), studies (`jobs`, `study`, `scoring`, `results`), reporting (`report`), live progress (`progress`)."""
