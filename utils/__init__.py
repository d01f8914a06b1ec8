"""Generic infrastructure any project could use: errors, I/O, safe loading, signals, threads, devices, processes, precision."""
