"""Placeholder: filled in by the streams work for issue 5."""

ROUTES: list = []
