"""What a run leaves behind: its result as plain data, summaries, and the output folder (plots, report)."""
