"""Placeholder: filled in by the pages work for issue 5."""

ROUTES: list = []
