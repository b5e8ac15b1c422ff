"""The docs show what the code does."""

from pathlib import Path

from ingestd.config import defaults_yaml

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_config_doc_lists_every_default():
    doc = (DOCS / "config.md").read_text()
    assert "```yaml\n" + defaults_yaml() + "```" in doc
