"""Shared support with no SmallTable knowledge: durable writes, time, processes, systemd."""
