"""Generic infrastructure any project could use.

Errors, atomic I/O, safe loading, the command boundary, signals, threads,
devices, processes and precision.
"""
