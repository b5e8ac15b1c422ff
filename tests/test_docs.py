"""The docs show what the code does."""

from pathlib import Path

from ingestd.config import defaults_yaml

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_config_doc_lists_every_default():
    doc = (DOCS / "config.md").read_text()
    assert "```yaml\n" + defaults_yaml() + "```" in doc


def test_every_alert_has_a_runbook_entry():
    import yaml

    rules = yaml.safe_load((DOCS.parent / "prometheus" / "alerts.yml").read_text())
    headings = {
        line[4:].strip().lower()
        for line in (DOCS / "ops.md").read_text().splitlines()
        if line.startswith("### ")
    }
    for group in rules["groups"]:
        for rule in group["rules"]:
            anchor = rule["annotations"]["runbook_url"].split("#")[1]
            assert rule["annotations"]["runbook_url"] == f"docs/ops.md#{rule['alert'].lower()}"
            assert anchor in headings, f"docs/ops.md has no '### {rule['alert']}'"


def test_the_tests_the_delivery_guarantee_cites_exist():
    import re

    cited = set(re.findall(r"`(test_[a-z_]+\.py)`", (DOCS / "delivery.md").read_text()))
    assert cited
    for name in cited:
        assert (DOCS.parent / "tests" / name).is_file(), name
