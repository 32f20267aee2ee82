"""Every public error survives pickle: workers in multiprocessing / concurrent.futures hand
their exceptions back pickled, and an error that cannot be rebuilt there becomes an opaque
failure of the pool instead of the error the caller catches. No server."""

from __future__ import annotations

import pickle

import pytest

from redis_ckpt import errors
from redis_ckpt.errors import FrameDamage
from redis_ckpt.probe.report import Finding

#: one of each public error class, built the way the library raises it
SAMPLES: dict[str, errors.CheckpointError] = {
    "CheckpointError": errors.CheckpointError("something failed", run_id="r"),
    "InvalidRunIdError": errors.InvalidRunIdError("bad run id 'a b'", value="a b"),
    "OutOfRangeError": errors.OutOfRangeError("ttl must be > 0", argument="ttl", value=-1.0, minimum=0.0,
                                              maximum=2.0**50, run_id="r"),
    "InvalidOptionError": errors.InvalidOptionError("chunk_bytes must be an int >= 1024", argument="chunk_bytes"),
    "NotFoundError": errors.NotFoundError("run 'r' does not exist", run_id="r"),
    "StateError": errors.StateError("cannot store", run_id="r"),
    "UnsupportedTypeError": errors.UnsupportedTypeError("a socket", path="$.s", type_name="socket", run_id="r"),
    "StateTooLargeError": errors.StateTooLargeError("too big", size=10, limit=5, run_id="r"),
    "LeaseError": errors.LeaseError("lease trouble", run_id="r"),
    "LeaseHeldError": errors.LeaseHeldError("r", owner="w1", ms_left=1500),
    "LeaseLostError": errors.LeaseLostError("r", token=3, holder="w2", holder_token=4, fence=4),
    "FencedError": errors.FencedError("r", token=3, fence=5, cause="revoke", by="admin", what="finish"),
    "ConflictError": errors.ConflictError("r", expected=2, actual=3),
    "DurabilityError": errors.DurabilityError("r", what="commit", generation=4, local_asked=1, local_got=0,
                                              replicas_asked=1, replicas_got=0, timeout_ms=500,
                                              server_error="ERR timeout"),
    "StoreUnavailableError": errors.StoreUnavailableError("connection lost", run_id="r", outcome_unknown=True),
    "OutcomeUnknownError": errors.OutcomeUnknownError("r", what="commit", refused="FENCED", token=3, fence=4,
                                                      expected=2, actual=3),
    "HeadMovingError": errors.HeadMovingError("r", reads=7, deadline_s=2.5),
    "ServerError": errors.ServerError("NOPERM", run_id="r", server_message="NOPERM no", outcome_unknown=True),
    "NonDurableServerError": errors.NonDurableServerError(
        "redis://:***@h:1/0", [Finding("appendonly", "refuse", "AOF is off", "CONFIG SET appendonly yes")]),
    "CorruptCheckpointError": errors.CorruptCheckpointError("r", {3: "checksum", 2: "missing"}),
    "DamagedRunsError": errors.DamagedRunsError(
        {"bad": errors.CorruptCheckpointError("bad", {3: "checksum"})}, ["pruned-run"]),
    "FrameError": errors.FrameError(FrameDamage.CHECKSUM, "xxh3 mismatch", run_id="r", generation=3),
    "SchemaVersionError": errors.SchemaVersionError("schema 9 is newer", run_id="r", found=9, supported=2),
    "CodecUnavailableError": errors.CodecUnavailableError("zstandard", extra="zstd", run_id="r"),
    "ExtraNotInstalledError": errors.ExtraNotInstalledError("the LangGraph saver", extra="langgraph",
                                                            missing="langgraph"),
}


def comparable(value: object) -> object:
    """``value`` with every error in it (DamagedRunsError.damaged holds some) as its type and
    attributes: exceptions do not compare equal by value."""
    if isinstance(value, BaseException):
        return type(value), value.args, comparable(vars(value))
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    return value


def test_every_public_error_has_a_sample() -> None:
    public = {name for name in errors.__all__ if isinstance(getattr(errors, name), type)
              and issubclass(getattr(errors, name), BaseException)}
    assert public == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_an_error_survives_pickle(name: str) -> None:
    exc = SAMPLES[name]
    assert type(exc).__name__ == name
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc) and back.args == exc.args and back.message == exc.message
    assert comparable(vars(back)) == comparable(vars(exc))  # run_id, outcome_unknown, token, fence, cause, ...
    for attr in ("outcome_unknown", "revoked_by", "reason", "msg"):
        assert getattr(back, attr, None) == getattr(exc, attr, None)


def _fenced() -> None:
    raise errors.FencedError("r", token=3, fence=5, cause="takeover", by="w2")


def test_a_worker_process_error_reaches_the_caller_as_itself() -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1) as pool:
        with pytest.raises(errors.FencedError) as raised:
            pool.submit(_fenced).result()
    assert raised.value.token == 3 and raised.value.fence == 5 and raised.value.by == "w2"
