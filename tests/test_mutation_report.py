"""bench/mutation.py's report: scores per module, and the ledger of equivalent survivors."""

from __future__ import annotations

import json
import os

import pytest

from conftest import load_bench


@pytest.fixture(scope="module")
def mutation():
    return load_bench("mutation")


STATUS = {
    "sim.core.queues.x_take__mutmut_1": "killed",
    "sim.core.queues.x_take__mutmut_2": "killed",
    "sim.core.queues.x_take__mutmut_3": "timeout",
    "sim.core.queues.x_take__mutmut_4": "survived",     # listed as equivalent below
    "sim.core.queues.x_take__mutmut_5": "survived",     # not listed
    "sim.core.queues.x_take__mutmut_6": "no tests",
    "sim.core.queues.x_take__mutmut_7": "not checked",  # counts as a mutant, not in the score
    "traces.summary.x_f__mutmut_1": "survived",         # listed
}


def test_scores_count_listed_survivors_apart(mutation):
    ledger = {"sim.core.queues.x_take__mutmut_4": "a no-op", "traces.summary.x_f__mutmut_1": "prose"}
    table = mutation.scores(STATUS, ledger)
    queues = table["sim.core.queues"]
    assert (queues["mutants"], queues["killed"], queues["timeout"], queues["survived"], queues["no_tests"],
            queues["other"], queues["equivalent"]) == (7, 2, 1, 2, 1, 1, 1)
    assert queues["score"] == pytest.approx(3 / 6)                  # killed + timeout over the 6 counted
    assert queues["score_excl_equivalent"] == pytest.approx(3 / 5)  # the listed survivor left out
    assert queues["unlisted"] == ["sim.core.queues.x_take__mutmut_5"]
    summary = table["traces.summary"]
    assert summary["score"] == 0.0 and summary["score_excl_equivalent"] is None   # nothing left to score


def test_a_listed_mutant_that_timed_out_counts_as_a_listed_survivor(mutation):
    """The ledger says it behaves as the code does, which does not hang: its timeout is mutmut's
    limit on a busy machine, not a catch."""
    ledger = {"sim.core.queues.x_take__mutmut_3": "the same loop bound"}
    queues = mutation.scores(STATUS, ledger)["sim.core.queues"]
    assert (queues["killed"], queues["timeout"], queues["survived"], queues["equivalent"]) == (2, 0, 3, 1)
    assert queues["score"] == pytest.approx(2 / 6) and queues["score_excl_equivalent"] == pytest.approx(2 / 5)
    assert "sim.core.queues.x_take__mutmut_3" in queues["survivors"]
    assert mutation.stale_entries(mutation.scores(STATUS, ledger), ledger) == []


def test_render_totals_and_names_what_is_left(mutation):
    ledger = {"sim.core.queues.x_take__mutmut_4": "a no-op", "traces.summary.x_f__mutmut_1": "prose",
              "sim.core.queues.x_take__mutmut_1": "listed, but killed in this run"}
    text = mutation.render(mutation.scores(STATUS, ledger), ledger)
    total = next(line for line in text.splitlines() if line.startswith("all "))
    assert total.split() == ["all", "8", "2", "3", "1", "1", "42.9%", "2", "60.0%"]   # 3/7 and 3/5
    assert "survivors not listed as equivalent in docs/mutation-equivalents.toml: 1" in text
    assert "not tested yet: 1 of 8" in text
    assert "ledger entries that are not survivors of this run (killed since, renamed, or not yet tested): 1" in text
    assert mutation.stale_entries(mutation.scores(STATUS, ledger), ledger) == ["sim.core.queues.x_take__mutmut_1"]


def test_the_ledger_is_read_and_a_bad_entry_is_named(mutation, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[[equivalent]]\nmutants = ["a.x_f__mutmut_1", "a.x_f__mutmut_2"]\nwhy = "same value"\n')
    assert mutation.equivalents(good) == {"a.x_f__mutmut_1": "same value", "a.x_f__mutmut_2": "same value"}
    assert mutation.equivalents(tmp_path / "none.toml") == {}
    bad = tmp_path / "bad.toml"
    bad.write_text('[[equivalent]]\nmutants = ["a.x_f__mutmut_1"]\nwhy = "ok"\n'
                   '[[equivalent]]\nmutants = []\nwhy = "x"\n')
    with pytest.raises(ValueError, match=r"equivalent\[1\] needs a non-empty list 'mutants'"):
        mutation.equivalents(bad)


def test_the_shipped_ledger_parses_and_every_entry_has_a_reason(mutation):
    ledger = mutation.equivalents()
    assert all(why.strip() for why in ledger.values())
    assert all("__mutmut_" in name for name in ledger)


def test_recheck_names_what_a_newer_test_may_change_and_forgets_the_test_map(mutation, tmp_path, monkeypatch,
                                                                           capsys):
    """A bare recheck names the survivors the ledger does not list, the timeouts and the untested
    mutants (one may sit in a function added since mutmut mapped tests to functions, so it makes
    mutmut map them afresh), and the checks cut short; the ledger's survivors only when asked."""
    stats = tmp_path / "mutmut-stats.json"
    stats.write_text("{}")
    monkeypatch.setattr(mutation, "STATS", stats)
    monkeypatch.setattr(mutation, "equivalents", lambda: {"sim.core.queues.x_take__mutmut_4": "a no-op",
                                                          "traces.summary.x_f__mutmut_1": "prose"})
    calls = []

    class Done:
        returncode = 0

    def named(argv: list[str]) -> int:
        calls.clear()
        assert mutation.main(argv) == 0
        return [a for a in calls[0] if "__mutmut_" in a] if calls else []

    monkeypatch.setattr(mutation, "results", lambda: STATUS)
    monkeypatch.setattr(mutation.subprocess, "run", lambda argv, **kw: calls.append(argv) or Done())
    monkeypatch.setattr(mutation.shutil, "which", lambda name: name)
    assert named(["--recheck"]) == ["sim.core.queues.x_take__mutmut_3", "sim.core.queues.x_take__mutmut_5",
                                    "sim.core.queues.x_take__mutmut_6"]
    assert not stats.exists()
    assert named(["--recheck", "listed"]) == ["sim.core.queues.x_take__mutmut_4", "traces.summary.x_f__mutmut_1"]
    assert named(["--recheck", "unlisted,timeout"]) == ["sim.core.queues.x_take__mutmut_3",
                                                        "sim.core.queues.x_take__mutmut_5"]
    # a check cut short (a worker killed, SIGKILL reads "segfault"; interrupted) is no verdict
    cut = {"sim.core.queues.x_take__mutmut_1": "segfault", "sim.core.queues.x_take__mutmut_2": "check was interrupted by user"}
    monkeypatch.setattr(mutation, "results", lambda: {**STATUS, **cut})
    assert named(["--recheck"])[:2] == sorted(cut)
    assert named(["--recheck", "cut-short"]) == sorted(cut)
    # nothing to recheck: nothing is run (an unnamed run would test every mutant left)
    monkeypatch.setattr(mutation, "results", lambda: {name: "killed" for name in STATUS})
    assert named(["--recheck"]) == [] and calls == []
    assert "nothing to recheck" in capsys.readouterr().out
    calls.clear()   # an unknown kind is refused before anything runs
    assert mutation.main(["--recheck", "unlisted,bogus"]) == 2 and calls == []
    assert "error: --recheck: unknown kind 'bogus'" in capsys.readouterr().err


def test_a_run_tests_the_unlisted_mutants_first_and_the_ledgers_last(mutation, monkeypatch):
    """The ledger's equivalents survive, so each runs every test that reaches it: they come last, and
    a first run makes the mutants (by naming one listed mutant) before it can name the others."""
    ledger = {"sim.core.queues.x_take__mutmut_4": "a no-op", "sim.core.queues.x_take__mutmut_7": "a no-op"}
    fresh = {name: "not checked" for name in STATUS}
    seen = iter([{}, fresh])                       # nothing made yet, then every mutant unchecked
    monkeypatch.setattr(mutation, "results", lambda: next(seen, STATUS))
    monkeypatch.setattr(mutation, "equivalents", lambda: ledger)
    calls = []

    class Done:
        returncode = 0

    monkeypatch.setattr(mutation.subprocess, "run", lambda argv, **kw: calls.append(argv) or Done())
    monkeypatch.setattr(mutation.shutil, "which", lambda name: name)
    assert mutation.main([]) == 0
    named = [[a for a in argv if "__mutmut_" in a] for argv in calls]
    assert named == [["sim.core.queues.x_take__mutmut_4"],                    # makes the mutants
                     sorted(set(STATUS) - set(ledger)),                      # the unlisted, undecided
                     []]                                                     # then the rest: the ledger's
    calls.clear()
    seen = iter([STATUS])      # resumed: verdicts exist, so nothing is made and no decided mutant is named
    assert mutation.main([]) == 0
    assert [[a for a in argv if "__mutmut_" in a] for argv in calls] == [[]]


def test_under_mutmut_a_mutants_tests_run_fastest_first(tmp_path, monkeypatch):
    """tests/conftest.py orders the tests by mutmut's recorded durations when a mutant is under test
    (so -x stops at the quickest failing test), and leaves pytest's order alone otherwise."""
    import conftest

    class Item:
        def __init__(self, nodeid):
            self.nodeid = nodeid

    (tmp_path / "mutmut-stats.json").write_text(
        '{"duration_by_test": {"tests/a.py::slow": 30.0, "tests/b.py::fast": 0.1, "tests/c.py::mid": 2.0}}')
    monkeypatch.chdir(tmp_path)
    order = ["mutants/tests/a.py::slow", "tests/c.py::mid", "tests/d.py::unknown", "tests/b.py::fast"]
    items = [Item(n) for n in order]
    monkeypatch.delenv("MUTANT_UNDER_TEST", raising=False)
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.nodeid for i in items] == order
    monkeypatch.setenv("MUTANT_UNDER_TEST", "sim.core.queues.x_take__mutmut_1")
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.nodeid for i in items] == ["tests/d.py::unknown", "tests/b.py::fast", "tests/c.py::mid",
                                         "mutants/tests/a.py::slow"]


def test_a_mutants_tests_are_its_functions_quickest_first(mutation, tmp_path):
    stats = tmp_path / "mutmut-stats.json"
    stats.write_text(json.dumps({
        "tests_by_mangled_function_name": {"sim.core.queues.x_take": ["t.py::slow", "t.py::quick", "t.py::new"],
                                           "sim.core.queues.x_other": ["t.py::other"]},
        "duration_by_test": {"t.py::slow": 2.0, "t.py::quick": 0.5, "t.py::new": 1.0}}))
    test_map = mutation.load_test_map(stats)
    assert mutation.tests_of("sim.core.queues.x_take__mutmut_12", test_map) == ["t.py::quick", "t.py::new", "t.py::slow"]
    assert mutation.tests_of("sim.core.queues.x_gone__mutmut_1", test_map) == []


MUTANT_TESTS = '''import os

def test_it():
    mutant = os.environ["MUTANT_UNDER_TEST"]
    while mutant.endswith("loop"):
        pass
    assert not mutant.endswith("wrong")
'''


@pytest.mark.parametrize("mutant, verdict", [
    ("m.x_f__mutmut_loop", "loops (test_it.py::test_it ran past 2 s)"),
    ("m.x_f__mutmut_wrong", "killed (test_it.py::test_it)"),
    ("m.x_f__mutmut_same", "survived (1 tests passed)"),
])
def test_by_hand_tells_a_loop_a_failure_and_a_survivor_apart(mutation, tmp_path, mutant, verdict):
    """The mutant chosen as mutmut chooses it (MUTANT_UNDER_TEST), each test under pytest-timeout."""
    (tmp_path / "test_it.py").write_text(MUTANT_TESTS)
    assert mutation.by_hand(mutant, ["test_it.py::test_it"], 2.0, dict(os.environ), cwd=tmp_path) == verdict
    assert mutation.by_hand(mutant, [], 2.0, dict(os.environ), cwd=tmp_path) == "no tests"


def test_by_hand_checks_every_timeout_or_refuses_in_one_line(mutation, tmp_path, monkeypatch, capsys):
    """Bare, it checks every timeout of the last run; a name mutmut does not have, a limit that is
    not positive, or no test map yet: one line, exit status 2, nothing run."""
    (tmp_path / "mutants").mkdir()
    (tmp_path / "mutants" / "test_it.py").write_text(MUTANT_TESTS)
    stats = tmp_path / "mutants" / "mutmut-stats.json"
    stats.write_text(json.dumps({"tests_by_mangled_function_name": {"m.x_f": ["test_it.py::test_it"]},
                                 "duration_by_test": {"test_it.py::test_it": 0.01}}))
    monkeypatch.setattr(mutation, "ROOT", tmp_path)
    monkeypatch.setattr(mutation, "STATS", stats)
    monkeypatch.setattr(mutation, "results", lambda: {"m.x_f__mutmut_wrong": "timeout", "m.x_f__mutmut_same": "timeout",
                                                      "m.x_f__mutmut_loop": "killed"})
    assert mutation.main(["--test-limit", "5", "--by-hand"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["[1/2] survived (1 tests passed): m.x_f__mutmut_same",
                   "[2/2] killed (test_it.py::test_it): m.x_f__mutmut_wrong", "1 killed, 1 survived"]
    for args, problem in [(["--by-hand", "m.x_f__mutmut_99"], "error: --by-hand: no mutant 'm.x_f__mutmut_99' in the last run"),
                          (["--test-limit", "0", "--by-hand"], "error: --test-limit: expected a positive number of seconds")]:
        assert mutation.main(args) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(problem)
    stats.unlink()
    assert mutation.main(["--by-hand"]) == 2
    assert capsys.readouterr().err.strip() == "error: mutants/mutmut-stats.json: no test map; run `python bench/mutation.py` first"
