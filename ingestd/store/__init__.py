"""Where records go: one SQLite database per project, the holding area, retention, quotas."""
