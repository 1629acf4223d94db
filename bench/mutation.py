"""Mutation testing of the core: how many planted bugs the test suite catches, per module.

A mutant is a copy of the code with one small change (``<`` for ``<=``, ``+ 1`` for ``+ 0``, a
dropped ``not``). A mutant is *killed* when some test fails on it (or hangs past mutmut's time limit: "timeout"),
*survives* when every test still passes. A module's score is (killed + timeout) / all its mutants:
mutants that no selected test even executes ("no tests") count against it like survivors, and are
shown apart because they are gaps in coverage rather than in the assertions. The modules and the test selection live in ``pyproject.toml`` under ``[tool.mutmut]``:
the ones that define what we publish (the summary and its metrics, the request log and the
measurement window, queues and expiry, batch formation, cascade exits, service-time interpolation,
arrival generators, replica accounting and cost, the planner's estimates).

    python bench/mutation.py            # run mutmut (long: hours on 2 cores; resumes), then print the scores
                                        # (the mutants the ledger does not list first, its equivalents last)
    python bench/mutation.py --report   # print the scores of the last run again
    python bench/mutation.py --json scores.json   # also write them as JSON
    python bench/mutation.py --recheck  # test again what a newer test may change: survivors the ledger does not
                                        # list, timeouts, untested and cut-short mutants; then report
    python bench/mutation.py --recheck listed   # the ledger's survivors (does a newer test kill one?)
    python bench/mutation.py --by-hand  # each timeout's tests without mutmut's CPU limit (pytest-timeout's
                                        # instead): killed, loops or survived

Survivors are listed by name; ``mutmut show NAME`` prints one as a diff. Each one is either killed by
a new test or listed as equivalent (no test could tell it apart), with the reason, in
``docs/mutation-equivalents.toml`` (the ledger this script reads; ``docs/mutation.md`` tells the
story). The report then says how many survivors are listed and names those that are not, and gives
the score over the mutants that are not equivalent beside the plain one. mutmut numbers a function's
mutants in order, so editing a function renumbers them: its ledger entries must be checked again
against ``mutmut show`` (the report counts entries that are no longer survivors; an entry that now
names another survivor it cannot see).
``make mutation`` runs this script. mutmut works in ``mutants/`` (a copy of the tree it writes itself).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUNTED = ("killed", "survived", "timeout", "no tests")
LEDGER = ROOT / "docs" / "mutation-equivalents.toml"


# what --recheck may test again, by kind: survivors the ledger does not list (a test written since
# may kill them) and those it lists (to find an entry a new test contradicts: each runs every test
# that reaches it), timeouts (a busy or paused machine's too; a mutant that loops costs its whole
# time limit again), untested mutants, and checks cut short: a worker stopped by a signal (mutmut
# says "segfault" for SIGKILL as for SIGSEGV) or interrupted
RECHECK_KINDS = ("unlisted", "listed", "timeout", "untested", "cut-short")
RECHECK_DEFAULT = "unlisted,timeout,untested,cut-short"
_KIND_OF_STATE = {"timeout": "timeout", "no tests": "untested",
                  "segfault": "cut-short", "check was interrupted by user": "cut-short"}


def recheck_kind(state: str, listed: bool) -> str | None:
    """The --recheck kind of a mutant in ``state`` (``listed``: the ledger lists it); None: a
    verdict that stands (killed) or no verdict yet (not checked: a run, not a recheck, tests it)."""
    if state == "survived":
        return "listed" if listed else "unlisted"
    return _KIND_OF_STATE.get(state)


def parse_kinds(text: str) -> set[str]:
    """The kinds of ``--recheck KINDS``, a comma list of ``RECHECK_KINDS``."""
    kinds = {k.strip() for k in text.split(",") if k.strip()}
    unknown = sorted(kinds - set(RECHECK_KINDS))
    if unknown or not kinds:
        problem = f"unknown kind {unknown[0]!r}" if unknown else "no kind given"
        raise ValueError(f"--recheck: {problem}; expected a comma list of {', '.join(RECHECK_KINDS)}")
    return kinds


STATS = ROOT / "mutants" / "mutmut-stats.json"


def forget_test_map(stats: Path | None = None) -> bool:
    """Make mutmut map tests to functions afresh on its next run (True if there was a map).

    mutmut maps which tests execute which function once, then adds only new *tests* to the map: a
    function added to a module since (a helper split out of another) has no tests in it, and its
    mutants are marked "no tests" without running. The map is mutmut's cache, in its own
    ``mutants/`` directory; the verdicts are kept apart and survive this."""
    stats = stats or STATS
    if not stats.is_file():
        return False
    stats.unlink()
    return True


def load_test_map(stats: Path | None = None) -> dict:
    """mutmut's map of tests to functions and the tests' durations, from its last run (megabytes:
    read once for all the mutants it is asked about)."""
    return json.loads((stats or STATS).read_text())


def tests_of(name: str, test_map: dict) -> list[str]:
    """The tests mutmut maps to a mutant's function (``test_map``: ``load_test_map()``), quickest first."""
    durations = test_map.get("duration_by_test", {})
    tests = test_map.get("tests_by_mangled_function_name", {}).get(name.rsplit("__mutmut_", 1)[0], [])
    return sorted(tests, key=lambda test: (durations.get(test, 0.0), test))


def by_hand(name: str, tests: list[str], limit_s: float, env: dict[str, str], cwd: Path | None = None) -> str:
    """A mutant's verdict from its tests, run as mutmut runs them (in its copy of the tree, the
    mutant chosen by MUTANT_UNDER_TEST) but without mutmut's CPU limit: each test has ``limit_s``
    (pytest-timeout) instead. "killed" (a test failed), "loops" (a test ran past ``limit_s``: an
    endless loop, if the test is quick on the code), "survived" (every test passed).

    mutmut sets a mutant's limit from its tests' recorded durations, which count each test's call
    and not its fixtures, times ``timeout_multiplier``: a survivor whose tests build heavy fixtures,
    or any mutant on a busy machine, can run past it and read "timeout", which counts as a catch."""
    if not tests:
        return "no tests"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           f"--timeout={limit_s:g}", *tests], cwd=cwd or ROOT / "mutants",
                          env={**env, "MUTANT_UNDER_TEST": name}, capture_output=True, text=True)
    if done.returncode == 0:
        return f"survived ({len(tests)} tests passed)"
    failed = next((line.split(" - ")[0] for line in done.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))),
                  None)
    if done.returncode != 1 or failed is None:
        return f"no verdict (pytest exited with {done.returncode})"
    test = failed.split(" ", 1)[1]
    if "Failed: Timeout" in done.stdout:   # pytest-timeout's failure
        return f"loops ({test} ran past {limit_s:g} s)"
    return f"killed ({test})"


def equivalents(path: Path = LEDGER) -> dict[str, str]:
    """mutant name -> why it is equivalent, from the ledger (``[[equivalent]]`` tables with
    ``mutants`` and ``why``); an empty mapping if there is none."""
    if not path.is_file():
        return {}
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    out: dict[str, str] = {}
    for index, entry in enumerate(raw.get("equivalent", [])):
        names, why = entry.get("mutants"), entry.get("why")
        if not isinstance(names, list) or not names or not isinstance(why, str) or not why.strip():
            raise ValueError(f"{path}: equivalent[{index}] needs a non-empty list 'mutants' and a reason 'why'")
        for name in names:
            out[str(name)] = why
    return out


def mutmut() -> list[str]:
    exe = Path(sys.executable).with_name("mutmut")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mutmut"]


def results() -> dict[str, str]:
    """mutant name -> status, from mutmut's own record of the last run."""
    out = subprocess.run(mutmut() + ["results", "--all", "true"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    status = {}
    for line in out.splitlines():
        name, sep, state = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            status[name] = state.strip()
    return status


def run_mutmut(names: list[str], max_children: int, env: dict[str, str]) -> int:
    """``mutmut run`` on these mutants (all of them when empty); its exit status."""
    return subprocess.run(mutmut() + ["run", "--max-children", str(max_children), *names], cwd=ROOT,
                          env=env).returncode


def listed_last(equivalent: dict[str, str], max_children: int, env: dict[str, str]) -> list[list[str]]:
    """The passes of a run: the mutants without a verdict that the ledger does not list, then the rest.

    mutmut orders mutants by the time their tests would take, so the ledger's equivalents, which
    survive and therefore run every test that reaches them (minutes each on the engine), would be
    spread through the run. Testing the unlisted ones first shows the work left (new survivors)
    hours earlier; the listed ones then confirm the ledger. mutmut makes its mutants at the start of
    any run: before the first, naming one listed mutant makes them all and tests only that one.
    A named mutant is tested again even if it has a verdict, so only undecided ones are named."""
    status = results()
    if not status and equivalent:
        run_mutmut([min(equivalent)], max_children, env)  # a stale name fails after making the mutants: fine
        status = results()
    unlisted = sorted(n for n, state in status.items() if state == "not checked" and n not in equivalent)
    return ([unlisted] if unlisted else []) + [[]]


def module_of(mutant: str) -> str:
    return mutant.rsplit(".", 1)[0]


def scores(status: dict[str, str], equivalent: dict[str, str] | None = None) -> dict[str, dict]:
    """Per module: counts by outcome, the plain score, and the score over the mutants the ledger
    does not list as equivalent (a listed survivor is not a gap in the tests).

    A listed mutant that timed out counts as a survivor: the ledger says it behaves as the code
    does, which does not hang, so its timeout was mutmut's time limit on a slow or busy machine
    (its limit counts only the tests' own call time), not a test that caught it."""
    equivalent = equivalent or {}
    by_module: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for name, state in status.items():
        if state == "timeout" and name in equivalent:
            state = "survived"
        by_module[module_of(name)][state] += 1
        if state == "survived":
            survivors[module_of(name)].append(name)
    table = {}
    for module in sorted(by_module):
        counts = by_module[module]
        counted = sum(counts[s] for s in COUNTED)
        caught = counts["killed"] + counts["timeout"]
        listed = sum(name in equivalent for name in survivors[module])
        table[module] = {"mutants": sum(counts.values()), "killed": counts["killed"], "survived": counts["survived"],
                         "timeout": counts["timeout"], "no_tests": counts["no tests"],
                         "other": sum(counts.values()) - counted, "equivalent": listed,
                         "score": caught / counted if counted else None,
                         "score_excl_equivalent": caught / (counted - listed) if counted > listed else None,
                         "survivors": sorted(survivors[module]),
                         "unlisted": sorted(n for n in survivors[module] if n not in equivalent)}
    return table


def stale_entries(table: dict[str, dict], equivalent: dict[str, str] | None = None) -> list[str]:
    """Ledger entries that name no survivor of this run: killed since, renamed by an edit of their
    function (mutmut numbers a function's mutants in order), or not tested yet."""
    survived = {name for row in table.values() for name in row["survivors"]}
    return sorted(set(equivalent or {}) - survived)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render(table: dict[str, dict], equivalent: dict[str, str] | None = None) -> str:
    lines = [f"{'module':28s} {'mutants':>7s} {'killed':>6s} {'survived':>8s} {'timeout':>7s} {'no tests':>8s} "
             f"{'score':>6s} {'equiv.':>6s} {'excl. equiv.':>12s}"]
    total = Counter()
    for module, row in table.items():
        lines.append(f"{module:28s} {row['mutants']:7d} {row['killed']:6d} {row['survived']:8d} {row['timeout']:7d} "
                     f"{row['no_tests']:8d} {_pct(row['score']):>6s} {row['equivalent']:6d} "
                     f"{_pct(row['score_excl_equivalent']):>12s}")
        total.update({k: row[k] for k in ("mutants", "killed", "survived", "timeout", "no_tests", "equivalent")})
    counted = total["killed"] + total["survived"] + total["timeout"] + total["no_tests"]
    caught = total["killed"] + total["timeout"]
    lines.append(f"{'all':28s} {total['mutants']:7d} {total['killed']:6d} {total['survived']:8d} {total['timeout']:7d} "
                 f"{total['no_tests']:8d} {_pct(caught / counted if counted else None):>6s} {total['equivalent']:6d} "
                 f"{_pct(caught / (counted - total['equivalent']) if counted > total['equivalent'] else None):>12s}")
    lines.append("score = (killed + timeout) / (killed + timeout + survived + no tests); 'no tests': mutants no "
                 "selected test executes; excl. equiv.: the same without the survivors the ledger lists as equivalent")
    untested = sum(row["other"] for row in table.values())
    if untested:
        lines.append(f"not tested yet: {untested} of {total['mutants']} (a run in progress or stopped: the scores "
                     "are over the mutants tested so far)")
    unlisted = [name for row in table.values() for name in row["unlisted"]]
    stale = stale_entries(table, equivalent)
    lines.append(f"survivors not listed as equivalent in {LEDGER.relative_to(ROOT)}: {len(unlisted)}"
                 + ("" if not unlisted else " (--report --survivors names them)"))
    if stale:
        lines.append(f"ledger entries that are not survivors of this run (killed since, renamed, or not yet "
                     f"tested): {len(stale)} (--report --survivors names them)")
    return "\n".join(lines)


def tests_environment() -> dict[str, str]:
    """The environment of tests run in mutmut's copy of the tree (``mutants/``), where ../shared is
    not beside them: named, or every test on the real traces would skip and its mutants survive."""
    env = dict(os.environ)
    if not env.get("SERVESIM_SHARED") and (ROOT.parent / "shared").is_dir():
        env["SERVESIM_SHARED"] = str(ROOT.parent / "shared")
    return env


def _by_hand_all(names: list[str], limit_s: float) -> int:
    """--by-hand: a verdict line per mutant, as each comes (each can take minutes)."""
    if not STATS.is_file():
        print(f"error: {STATS.relative_to(ROOT)}: no test map; run `python bench/mutation.py` first", file=sys.stderr)
        return 2
    if limit_s <= 0:
        print("error: --test-limit: expected a positive number of seconds", file=sys.stderr)
        return 2
    status = results()
    unknown = [name for name in names if name not in status]
    if unknown:
        print(f"error: --by-hand: no mutant {unknown[0]!r} in the last run (`mutmut results --all true` lists them)",
              file=sys.stderr)
        return 2
    names = names or sorted(n for n, state in status.items() if state == "timeout")
    env, test_map, verdicts = tests_environment(), load_test_map(), Counter()
    for index, name in enumerate(names, 1):
        verdict = by_hand(name, tests_of(name, test_map), limit_s, env)
        verdicts[verdict.split(" (")[0]] += 1
        print(f"[{index}/{len(names)}] {verdict}: {name}", flush=True)
    print(", ".join(f"{count} {verdict}" for verdict, count in sorted(verdicts.items())) or "no mutant named")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="print the scores of the last run without running")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested in parallel (default 2)")
    parser.add_argument("--json", help="also write the scores (and survivors) to this JSON file")
    parser.add_argument("--survivors", action="store_true", help="also list every surviving mutant by module (with --report: list only, run nothing)")
    parser.add_argument("--recheck", nargs="?", const=RECHECK_DEFAULT, metavar="KINDS",
                        help="test again the last run's mutants of these kinds, then report (mutmut keeps a verdict "
                             f"until the mutant is named): a comma list of {', '.join(RECHECK_KINDS)} "
                             f"(default {RECHECK_DEFAULT}: every verdict a test written since may change, "
                             "but the ledger's survivors)")
    parser.add_argument("--by-hand", nargs="*", metavar="NAME",
                        help="run each named mutant's tests (none named: every timeout of the last run) without "
                             "mutmut's CPU limit, each test limited to --test-limit, and print its verdict: killed, "
                             "loops or survived (mutmut's verdicts are left as they are)")
    parser.add_argument("--test-limit", type=float, default=120.0, metavar="S",
                        help="with --by-hand: each test's time limit in seconds (default 120)")
    args = parser.parse_args(argv)
    if shutil.which(mutmut()[0]) is None and not Path(mutmut()[0]).exists():
        print("error: mutmut is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    try:  # read first: a malformed ledger is refused before hours of mutants, not after them
        equivalent = equivalents()
        kinds = parse_kinds(args.recheck) if args.recheck is not None else set()
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.by_hand is not None:
        return _by_hand_all(args.by_hand, args.test_limit)
    if not args.report:
        env = tests_environment()
        if kinds:
            last = results()
            names = sorted(n for n, state in last.items() if recheck_kind(state, n in equivalent) in kinds)
            if not names:
                print(f"nothing to recheck: no mutant of the kinds {', '.join(sorted(kinds))} in the last run")
            if any(last[n] == "no tests" for n in names):
                forget_test_map()
            passes = [names] if names else []   # no name would mean every mutant left: not a recheck
        else:
            passes = listed_last(equivalent, args.max_children, env)
        for names in passes:
            code = run_mutmut(names, args.max_children, env)
            if code != 0:
                print(f"error: mutmut run exited with {code}", file=sys.stderr)
                return code
    status = results()
    table = scores(status, equivalent)
    print(render(table, equivalent))
    if args.survivors:
        for module, row in table.items():
            for name in row["survivors"]:
                print(f"survived: {name}" + (f"  [equivalent: {equivalent[name]}]" if name in equivalent else ""))
        for name in stale_entries(table, equivalent):
            print(f"listed, not a survivor: {name} ({status.get(name, 'no such mutant')})")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
