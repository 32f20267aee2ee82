"""The scripts' contract (redis_ckpt.core.contract) pinned to the headers of lua/*.lua: every
KEYS and ARGV position, commit.lua's ARGV[1] fields in order, and the fields of every error
a flow reads. A header and its builder cannot drift apart unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from redis_ckpt.core import contract
from redis_ckpt.core.contract import CommitFields, refusal
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.core.ops import ReplyError

LUA = Path(__file__).resolve().parents[2] / "lua"
K = RunKeys("ns", "run")


def header(name: str) -> str:
    lines = []
    for line in (LUA / f"{name}.lua").read_text(encoding="utf-8").splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return "\n".join(lines)


def positions(name: str, kind: str) -> dict[int, str]:
    """{i: the words after "KEYS[i]" / "ARGV[i]"} for single positions of the header."""
    return {int(m[1]): m[2] for m in re.finditer(rf"^{kind}\[(\d+)\]\s+(.*)$", header(name), re.M)}


def built(name: str, **values):
    builder = getattr(contract, f"{name}_script")
    extra = {"acquire": {"dead": []}, "delete": {"staged": []}, "prune": {"staged": []}}.get(name, {})
    return builder(K, **values, **extra)


@pytest.mark.parametrize("name", sorted(contract.SCRIPT_KEYS))
def test_fixed_keys_follow_the_header(name):
    keys = positions(name, "KEYS")
    for i, key in enumerate(contract.SCRIPT_KEYS[name], start=1):
        assert keys[i].split()[0] == key, (name, i, keys[i])


@pytest.mark.parametrize("name", sorted(contract.SCRIPT_ARGV))
def test_each_builder_puts_keys_and_arguments_where_the_header_says(name):
    argv = positions(name, "ARGV")
    fields = contract.SCRIPT_ARGV[name]
    values: dict = {arg: f"<{arg}>" for arg, _ in fields}
    values.update({"entries": ["7:0"], "strict": True, "dry": True}
                  if name in ("delete", "acquire", "retain", "prune") else {})
    values = {arg: values[arg] for arg, _ in fields}
    script = built(name, **values)
    assert script.name == name
    for i, (arg, words) in enumerate(fields):
        assert argv[i + 1].startswith(words), (name, i + 1, argv[i + 1], words)
        want = {"entries": 1, "strict": 1, "dry": 1}.get(arg, values[arg])
        assert script.args[i] == want, (name, arg, script.args[i])
    assert script.keys[: len(contract.SCRIPT_KEYS[name])] == [getattr(K, k) for k in contract.SCRIPT_KEYS[name]]


def test_commit_fields_are_argv1_in_the_headers_order():
    text = header("commit")
    block = re.search(r"^ARGV\[1\](.*?)^ARGV\[2\]", text, re.M | re.S)[1]
    block = re.sub(r"\([^)]*\)", "", block.split("in order:", 1)[1].replace("\n", " "))
    numbered = dict((int(n), words.strip()) for n, words in re.findall(r"(\d+) ([^,]+)", block))
    assert sorted(numbered) == list(range(1, len(CommitFields._fields) + 1))
    for i, field in enumerate(CommitFields._fields, start=1):
        assert numbered[i].startswith(contract.COMMIT_FIELD_NAMES[field]), (i, field, numbered[i])


def test_commit_script_layout():
    fields = CommitFields(*(f"v{i}" if i else "commit" for i in range(len(CommitFields._fields))))
    fields = fields._replace(generation=9)
    moved = ["stage-0", "g9"]
    script = contract.commit_script(K, fields, b"frame", moved, ["6:2"], ["cid:1"], ["ab" * 16])
    assert script.keys == [K.fence, K.head, K.events, K.lease, K.staging, K.generation(9), *moved,
                           K.generation(6), K.chunk(6, 0), K.chunk(6, 1), K.stage("cid", 0),
                           K.refs, K.shared("ab" * 16)]
    assert script.args == ["\n".join(map(str, fields)), b"frame", "6:2", "cid:1"]
    assert positions("commit", "KEYS")[6].startswith("the key of the new generation")
    assert positions("commit", "ARGV")[2].startswith("frame or manifest")


def test_error_fields_are_named_as_in_the_headers():
    seen: dict[str, set[tuple[str, ...]]] = {}
    for path in LUA.glob("*.lua"):
        for code, rest in re.findall(r'"([A-Z_]+)((?: <[^>]+>)+)', header(path.stem)):
            names = tuple(n.split("|")[0] for n in re.findall(r"<([^>]+)>", rest))
            seen.setdefault(code, set()).add(names)
    for code, names in contract.ERROR_FIELDS.items():
        assert seen.get(code) == {tuple(n.rstrip("*") for n in names)}, (code, seen.get(code))


def test_refusal_reads_fields_by_name():
    held = refusal(ReplyError("LEASE_HELD 1500 worker a:12"))
    assert held == {"ms_left": "1500", "owner": "worker a:12"}
    lost = refusal(ReplyError("LEASE_LOST 4 0 "))
    assert lost["fence"] == "4" and lost["holder_token"] == "0" and lost["holder_owner"] == ""
    assert refusal(ReplyError("OUT_OF_RANGE fence")) == {"what": "fence", "value": ""}


def test_load_script_layout():
    script = contract.load_script(K, [3, 4])
    assert script.keys == [K.head, K.generation(3), K.generation(4)] and script.args == [3, 4]
    assert positions("load", "KEYS")[1].startswith("head")
    assert positions("load", "ARGV")[1].startswith("the guessed generation numbers")
    assert re.search(r"^Returns \{" + ", ".join(contract.LOAD_FIELDS) + r", value\}", header("load"), re.M)
