"""Tables (rich), plots (matplotlib, Agg) and Markdown reports."""
