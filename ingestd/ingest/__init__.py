"""From the log to the store: follow the files, parse each line, decide where each request goes."""
