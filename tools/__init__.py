"""Command-line tools that read run folders (python -m tools.<name>)."""
