"""Datasets: readers of the official formats, the HDF5 store, and the training input."""
