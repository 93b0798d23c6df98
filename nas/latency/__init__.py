"""Latency: per-device lookup tables (``table``) and their importers (``nnmeter``)."""
from nas.latency.table import LatencyTable, device_dirs, load_table, table_path

__all__ = ["LatencyTable", "device_dirs", "load_table", "table_path"]
