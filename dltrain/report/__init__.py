"""What a run and a sweep write: tables, plots, the end-of-run lines, sweep summaries."""
