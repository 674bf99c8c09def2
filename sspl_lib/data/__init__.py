"""Data: benchmarks, packed HDF5 files, ground truth, real-data readers, preparation, views."""
