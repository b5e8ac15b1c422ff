"""nginx/SmallTableKeys.pm, run by the real Perl nginx embeds, outside nginx.

The module's two jobs (the hash of a Bearer key; the keyed-write check from the keys
map) are plain functions of a header, a project and a file, so they are tested here
with a stand-in for nginx's request object; tests/test_e2e_keys.py tests them in nginx.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from ingestd.store.keys import OWNER, Key, KeyStore, key_id

MODULE_DIR = Path(__file__).resolve().parent.parent / "nginx"

# A stand-in for nginx's $r: the Authorization header and $smalltable_project.
HARNESS = r"""
use strict;
use warnings;
use JSON::PP;
use SmallTableKeys;

package Request {
    sub header_in {
        my ($self, $name) = @_;
        die "asked for $name" unless $name eq 'Authorization';
        return $self->{auth};
    }
    sub variable {
        my ($self, $name) = @_;
        die "asked for $name" unless $name eq 'smalltable_project';
        return $self->{project};
    }
}

my $case = decode_json(do { local $/; <STDIN> });
my $check = SmallTableKeys::keyed_writer($case->{map});
my @answers;
for my $ask (@{ $case->{asks} }) {
    my $r = bless { auth => $ask->[0], project => $ask->[1] }, 'Request';
    push @answers, { hash => SmallTableKeys::bearer_hash($r), check => $check->($r) };
}
for my $n (1 .. $case->{wrong}) {
    SmallTableKeys::hash_of("Bearer stk_" . sprintf("%032x", $n));
}
print encode_json({ answers => \@answers, remembered => scalar(keys %SmallTableKeys::hashed) });
"""


def run_module(keys_map: Path, asks: list[tuple[str | None, str]], wrong: int = 0) -> dict:
    """Each ask's (bearer_hash, keyed-write check), and how many hashes the module holds."""
    case = json.dumps({"map": str(keys_map), "asks": asks, "wrong": wrong})
    perl = shutil.which("perl")
    assert perl, "perl is not installed (Debian: apt-get install perl)"
    done = subprocess.run(
        [perl, "-I", str(MODULE_DIR), "-e", HARNESS], input=case, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def new_key() -> tuple[str, str]:
    key = "stk_" + secrets.token_hex(16)
    return key, hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def keys(tmp_path):
    """The keys map ingestd itself writes (KeyStore.save), and the keys in it by name."""
    made = {name: new_key() for name in ("writer", "both", "owner", "reader", "expiring", "other")}
    entries = {  # name: (project, scope, expires)
        "writer": ("p", "write", None),
        "both": ("p", "read+write", None),
        "owner": ("p", OWNER, None),
        "reader": ("p", "read", None),
        "expiring": ("p", "write", 1999999999.0),
        "other": ("q", "write", None),
    }
    store = KeyStore(tmp_path, tmp_path / "no-nginx.pid")
    for name, (project, scope, expires) in entries.items():
        digest = made[name][1]
        store.add(project, Key(key_id(digest), digest, scope, f"request-{name}", 0.0, expires=expires))
    assert store.save()
    return tmp_path / "keys.map", made


def test_the_hash_is_sha256_of_the_key_and_malformed_headers_have_none(keys):
    path, made = keys
    key, digest = made["writer"]
    asks = [
        (f"Bearer {key}", "p"),
        (f"Bearer   {key}  ", "p"),
        (None, "p"),
        (key, "p"),
        (f"Basic {key}", "p"),
        (f"Bearer {key.upper()}", "p"),
        (f"Bearer {key}x", "p"),
        (f"Bearer {key}\n", "p"),
    ]
    hashes = [a["hash"] for a in run_module(path, asks)["answers"]]
    assert hashes == [digest, digest, "", "", "", "", "", ""]


def test_only_a_live_key_of_the_project_that_may_write_and_never_expires_passes(keys):
    path, made = keys

    def check(name: str, project: str = "p") -> str:
        return run_module(path, [(f"Bearer {made[name][0]}", project)])["answers"][0]["check"]

    for name, scope in (("writer", "write"), ("both", "read+write"), ("owner", "owner")):
        assert check(name) == f"{scope}:{key_id(made[name][1])}"
    # njs decides (and refuses, with its reason) all of these
    assert check("reader") == ""
    assert check("expiring") == ""
    assert check("other") == ""
    assert check("writer", project="q") == ""
    unknown = run_module(path, [(f"Bearer {new_key()[0]}", "p"), (None, "p")])["answers"]
    assert [a["check"] for a in unknown] == ["", ""]


def test_no_keys_map_yet_lets_no_key_through(tmp_path, keys):
    _, made = keys
    answer = run_module(tmp_path / "absent.map", [(f"Bearer {made['writer'][0]}", "p")])["answers"][0]
    assert answer == {"hash": made["writer"][1], "check": ""}


def test_wrong_keys_by_the_thousand_hold_at_most_1024_hashes(keys):
    path, made = keys
    held = run_module(path, [(f"Bearer {made['writer'][0]}", "p")], wrong=10_000)
    assert 0 < held["remembered"] <= 1024
