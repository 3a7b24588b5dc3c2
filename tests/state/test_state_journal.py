"""The call journal: atomic commits, the first committer wins, the argument guard."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from nalar_plugin.errors import SerializationError, StateError
from nalar_plugin.state import Journal, Store, default_serde
from nalar_plugin.state._ops import decode_ops, encode_op, encode_ops
from nalar_plugin.state.journal import UNGUARDED, arg_hash


def _ops(journal: Journal, *ops: tuple[str, str, str, str, tuple[Any, ...]]) -> bytes:
    return encode_ops([encode_op(journal.serde, *op) for op in ops])


def _commit(journal: Journal, key: str | None, value: Any, ops: bytes | None = None, *,
            hash_: str = "h", attempt: int = 0, session: str = "s") -> tuple[Any, bool]:
    result = journal.serde.dumps_typed(value)
    return journal.commit(key=key, arg_hash=hash_, session=session, call_id="c-1", attempt=attempt,
                          result=result, ops=ops)


def test_commit_records_result_and_writes_together(store: Store) -> None:
    journal = Journal(store)
    assert journal.lookup("k", "h") is None
    ops = _ops(journal, ("s", "log", "list", "append", ("a",)), ("s", "cfg", "dict", "set", ("x", 1)))
    rec, committed = _commit(journal, "k", {"answer": 42}, ops, attempt=2)
    assert committed and rec is not None
    found = journal.lookup("k", "h")
    assert found == rec
    assert found.value(journal.serde) == {"answer": 42}
    assert found.attempt == 2 and found.session == "s"
    assert journal.load_managed("s", "log", "list") == ["a"]
    assert journal.load_managed("s", "cfg", "dict") == {"x": 1}


def test_a_second_commit_of_the_same_call_writes_nothing(store: Store) -> None:
    journal = Journal(store)
    first, _ = _commit(journal, "k", "first", _ops(journal, ("s", "log", "list", "append", ("once",))))
    rec, committed = _commit(journal, "k", "second", _ops(journal, ("s", "log", "list", "append", ("again",))))
    assert not committed
    assert rec == first and rec.value(journal.serde) == "first"
    assert journal.load_managed("s", "log", "list") == ["once"]


def test_concurrent_commits_of_one_call_have_one_winner(store: Store) -> None:
    journal = Journal(store)
    outcomes: list[bool] = []
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        barrier.wait()
        _, committed = _commit(journal, "race", i, _ops(journal, ("s", "log", "list", "append", (i,))))
        outcomes.append(committed)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(True) == 1
    log = journal.load_managed("s", "log", "list")
    assert len(log) == 1 and journal.lookup("race", "h").value(journal.serde) == log[0]


def test_claims_let_one_live_execution_run(store: Store) -> None:
    journal = Journal(store)
    a, b, c = object(), object(), object()
    assert journal.claims.take("k", "h", a) is None
    assert journal.claims.take("k", "h", a) is None  # the holder asks again
    assert journal.claims.take("k", "h", b) is a  # another live execution holds it
    journal.claims.release("k", "h", b)  # not b's claim: nothing happens
    assert journal.claims.take("k", "h", b) is a
    journal.claims.release("k", "h", a)  # the holder committed or gave up
    assert journal.claims.take("k", "h", c) is None
    assert journal.claims.take("k", "other-hash", b) is None  # other arguments: another call
    assert len(journal.claims) == 2
    assert not list(store.keys("journal-claim:"))  # claims never touch the disk


def test_a_waiting_duplicate_is_called_back_when_the_claim_is_released(store: Store) -> None:
    journal = Journal(store)
    a, b, c = object(), object(), object()
    called: list[str] = []
    assert journal.claims.take("k", "h", a) is None
    assert journal.claims.take("k", "h", b, lambda: called.append("b")) is a
    assert journal.claims.take("k", "h", c, lambda: called.append("c")) is a
    assert journal.claims.waiting() == 2
    journal.claims.release("k", "h", b)  # not the holder: nobody is called
    assert called == [] and journal.claims.waiting() == 2
    journal.claims.release("k", "h", a)
    assert called == ["b", "c"] and journal.claims.waiting() == 0
    assert journal.claims.take("k", "h", b) is None  # free again


def test_async_commits_share_transactions_and_report_each_outcome(store: Store) -> None:
    journal = Journal(store)
    done: list[Any] = []
    finished = threading.Event()

    def report(outcome: Any, error: BaseException | None) -> None:
        done.append((outcome, error))
        if len(done) == 50:
            finished.set()

    for i in range(50):
        journal.commit_async(report, key=f"s/root/t/{i}", arg_hash="h", session="s", call_id=f"c-{i}", attempt=0,
                             result=journal.serde.dumps_typed(i), ops=None)
    assert finished.wait(30)
    assert all(error is None and committed for (_, committed), error in done)
    assert [r.value(journal.serde) for r in journal.records("s")] == list(range(50))
    assert journal._group.units == 50 and journal._group.batches < 50  # grouped


def test_other_arguments_under_one_key_are_another_call(store: Store) -> None:
    journal = Journal(store)
    _commit(journal, "k", "for-a", hash_=arg_hash(journal.serde, ("a",), {}))
    assert journal.lookup("k", arg_hash(journal.serde, ("b",), {})) is None
    _commit(journal, "k", "for-b", hash_=arg_hash(journal.serde, ("b",), {}))
    # Both stay: neither key+arguments pair ever runs twice.
    assert journal.lookup("k", arg_hash(journal.serde, ("a",), {})).value(journal.serde) == "for-a"
    assert journal.lookup("k", arg_hash(journal.serde, ("b",), {})).value(journal.serde) == "for-b"


def test_an_unguarded_call_is_found_by_key(store: Store) -> None:
    journal = Journal(store)
    assert arg_hash(journal.serde, (object(),), {}) == UNGUARDED
    _commit(journal, "k", 1, hash_=UNGUARDED)
    assert journal.lookup("k", UNGUARDED) is not None


def test_commit_without_key_applies_writes_only(store: Store) -> None:
    journal = Journal(store)
    rec, committed = journal.commit(key=None, arg_hash=UNGUARDED, session="s", call_id="c", attempt=0, result=None,
                                    ops=_ops(journal, ("s", "n", "dict", "set", ("k", "v"))))
    assert rec is None and committed
    assert journal.load_managed("s", "n", "dict") == {"k": "v"}
    assert journal.records("s") == []


def test_a_failing_commit_writes_nothing(store: Store) -> None:
    journal = Journal(store)
    journal.apply(_ops(journal, ("s", "x", "list", "append", (1,))))
    # The second operation opens "x" as a dict: the whole commit is refused.
    bad = _ops(journal, ("s", "log", "list", "append", ("a",)), ("s", "x", "dict", "set", ("k", 1)))
    with pytest.raises(StateError, match="managed_list"):
        _commit(journal, "k", "v", bad)
    assert journal.lookup("k", "h") is None
    assert journal.load_managed("s", "log", "list") == []
    assert journal.load_managed("s", "x", "list") == [1]


def test_records_and_forget_session(store: Store) -> None:
    journal = Journal(store)
    for i in range(3):
        _commit(journal, f"s/root/t/{i}", i, _ops(journal, ("s", "log", "list", "append", (i,))))
    _commit(journal, "other/root/t/0", 0, session="other")
    assert [r.value(journal.serde) for r in journal.records("s")] == [0, 1, 2]
    assert journal.managed_names("s") == ["log"]
    assert journal.forget_session("s") > 0
    assert journal.records("s") == [] and journal.lookup("s/root/t/0", "h") is None
    assert journal.load_managed("s", "log", "list") == []
    assert len(journal.records("other")) == 1


@dataclasses.dataclass
class _Point:
    x: int
    y: list[int]


def test_argument_hash_is_canonical() -> None:
    serde = default_serde()
    h = lambda *a, **kw: arg_hash(serde, a, kw)
    assert h(1, "a") == h(1, "a") and h(1, "a") != h("a", 1)
    assert h({"a": 1, "b": 2}) == h({"b": 2, "a": 1})
    assert h({3, 1, 2}) == h({1, 2, 3})
    assert h((1, [2])) == h([1, (2,)])  # the serde returns tuples as lists
    assert h(_Point(1, [2])) == h({"x": 1, "y": [2]})  # what a blocked class replays as
    assert h(1) != h(1.0) != h("1") and h(True) != h(1)
    assert h(x=1) != h(1)
    msg = AIMessage(content="hi", id="m1")
    assert h(msg) == h(AIMessage(content="hi", id="m1")) != h(AIMessage(content="ho", id="m1"))


def test_argument_hash_is_equal_in_another_process() -> None:
    import subprocess
    import sys

    code = (
        "from nalar_plugin.state import default_serde\n"
        "from nalar_plugin.state.journal import arg_hash\n"
        "print(arg_hash(default_serde(), ({'b', 'a', 'c'}, {'k': [1.5, None]}), {'z': b'x'}))\n"
    )
    here = arg_hash(default_serde(), ({"c", "a", "b"}, {"k": [1.5, None]}), {"z": b"x"})
    # A different PYTHONHASHSEED changes set order in the child.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == here


def test_staged_writes_round_trip_and_bad_values_fail_at_the_write(store: Store) -> None:
    journal = Journal(store)
    op = encode_op(journal.serde, "s", "n", "list", "insert", (slice(0, 2), [1]))
    assert decode_ops(encode_ops([op]))[0][:4] == ("s", "n", "list", "insert")
    with pytest.raises(SerializationError, match="managed_dict\\('n'\\) of session 's'"):
        encode_op(journal.serde, "s", "n", "dict", "set", ("k", object()))


def test_group_commit_isolates_each_callers_failure(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    journal = Journal(store)
    journal.apply(_ops(journal, ("s", "x", "list", "append", (0,))))

    def one(i: int) -> str:
        if i % 5 == 0:  # opens the list "x" as a dict: this caller alone fails
            ops = _ops(journal, ("s", f"mine-{i}", "list", "append", (i,)), ("s", "x", "dict", "set", ("k", i)))
        else:
            ops = _ops(journal, ("s", "shared", "list", "append", (i,)))
        try:
            _commit(journal, f"k{i}", i, ops)
        except StateError:
            return "failed"
        return "ok"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(one, range(100)))
    assert outcomes.count("failed") == 20 and outcomes.count("ok") == 80
    assert sorted(journal.load_managed("s", "shared", "list")) == [i for i in range(100) if i % 5]
    assert journal.managed_names("s") == ["shared", "x"]  # no half-written "mine-*"
    assert journal.load_managed("s", "x", "list") == [0]
