"""The files of a run folder: their names, the checkpoint, metrics.csv, the resume record, provenance, plots and TensorBoard."""
