"""Command-line tools that read finished run folders (python -m tools.<name>)."""
