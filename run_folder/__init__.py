"""The files of a run folder.

Their names, the checkpoint, metrics.csv, the resume record, provenance,
plots and TensorBoard.
"""
