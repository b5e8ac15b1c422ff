"""The value types both sides share: a logged request, a record or reject, a project's settings."""
