"""Command-line tools: dataset generation, annotation conversion, attention statistics and
the flag reference page."""
