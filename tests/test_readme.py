"""The README's Python examples run, against a real server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert python_blocks(), "the README shows no Python example"


@pytest.mark.server
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index, durable_server, namespace, client):
    code = python_blocks()[index]
    code = code.replace("redis://localhost:6379/0", durable_server.url)
    code = re.sub(r'namespace="[^"]+"', f'namespace="{namespace}"', code)
    scope: dict = {}
    exec(compile(code, f"README.md example {index}", "exec"), scope)
    store = scope.get("store")
    if store is not None and index == 0:  # the quick start checkpoints three steps
        assert store.load("report-2026-12").state == {"done": ["fetch", "parse", "publish"]}
