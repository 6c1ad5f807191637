"""Command-line tools: dataset generation and annotation conversion."""
