"""Data: benchmarks, packed HDF5 files, ground truth, real-data readers, preparation (imported lazily)."""

from importlib import import_module

_EXPORTS = {
    "generate_benchmark": "synthetic", "render_sample": "synth_sample", "class_table": "synth_sample",
    "split_gt_maps": "synthetic",
    "H5Writer": "h5", "AVDataset": "h5", "load_split": "h5", "open_h5": "h5", "DataFileError": "h5",
    "AugmentConfig": "transforms", "batch_train_views": "transforms", "eval_frame": "transforms",
    "flickr_gt_map": "gt", "vggss_gt_map": "gt", "gt_maps_for_split": "gt", "load_vggss_annotations": "gt",
    "load_id_list": "gt", "AnnotationError": "gt",
    "FlickrTrain": "real", "VGGSoundTrain": "real", "FlickrTest": "real", "VGGSSTest": "real",
    "pack_official_h5": "real", "prepare_folder": "prepare", "find_items": "prepare", "MediaError": "media",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
