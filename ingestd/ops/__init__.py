"""Running and watching SmallTable: metrics, lag, status, config checks, rendered files, the stack."""
