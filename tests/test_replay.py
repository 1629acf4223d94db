"""Tests for traces.arrivals.Replay's readers: each bad trace gets its exact one-line message.

The message (where + problem) is the whole story a user gets (traces.errors), so these tests pin
it word for word: which key, file, row or line is named, and what was expected; and they pin the
explicit ``format``/``unit`` choices, the jsonl/ndjson readers and the window edges, where the
auto-detected path would hide a broken explicit one.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from traces.arrivals import Replay
from traces.errors import InputError


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def write(tmp_path: pathlib.Path, name: str, text: str | bytes) -> pathlib.Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def error(fn, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    return info.value.where, info.value.problem


# ---------------------------------------------------------------- options


def test_option_errors_name_the_default_where(tmp_path):
    p = write(tmp_path, "w.txt", "1 2 3 4")
    assert error(Replay, p, start_s=-1) == ("arrivals.start_s", "must be a number >= 0, got -1")
    assert error(Replay, p, length_s=0) == ("arrivals.length_s", "must be a number > 0, got 0")
    assert error(Replay, p, rate_scale=0) == ("arrivals.rate_scale", "must be a number > 0, got 0")
    assert error(Replay, p, unit="min") == ("arrivals.unit", "must be one of auto, s, ms, us, datetime; got 'min'")
    assert error(Replay, p, format="csv") == ("arrivals.format", "must be one of auto, counts, timestamps; got 'csv'")
    assert error(Replay, p, column=3) == ("arrivals.column", "must be a string, got 3")


def test_missing_file_message(tmp_path):
    p = tmp_path / "nope.csv"
    assert error(Replay, p) == (str(p), "file not found")


def test_counts_options_that_do_not_apply(tmp_path):
    p = write(tmp_path, "w.txt", "1 2 3 4")
    assert error(Replay, p, length_s=2.5) == ("arrivals.length_s", "must be whole seconds for a counts trace, got 2.5")
    assert error(Replay, p, start_s=0.5) == ("arrivals.start_s", "must be whole seconds for a counts trace, got 0.5")
    assert error(Replay, p, unit="s") == ("arrivals.unit", f"applies only to a timestamps trace; {p} is counts")
    assert error(Replay, p, column="t") == ("arrivals.column", f"applies only to a timestamps trace; {p} is counts")


def test_explicit_format_overrides_the_suffix(tmp_path):
    # a .dat suffix cannot be detected, so only the explicit format makes these readable
    c = write(tmp_path, "w.dat", "3 0 2")
    r = Replay(c, format="counts")
    assert r.format == "counts" and r.counts.tolist() == [3, 0, 2] and r.span_s == 3.0
    t = write(tmp_path, "t.dat", "t\n10\n11.5\n14\n")
    r = Replay(t, format="timestamps")
    assert r.format == "timestamps" and r.stamps.tolist() == [0.0, 1.5, 4.0] and r.span_s == 4.0


# ---------------------------------------------------------------- format detection


def test_detect_by_suffix_and_leading_digit(tmp_path):
    assert Replay(write(tmp_path, "t.csv", "t\n0\n1\n")).format == "timestamps"
    assert Replay(write(tmp_path, "t.jsonl", '{"timestamp": 0}\n{"timestamp": 2}\n')).format == "timestamps"
    r = Replay(write(tmp_path, "w.txt", " \n\t 5 6\n"))  # leading white space is skipped
    assert r.format == "counts" and r.counts.tolist() == [5, 6]


def test_detect_sniffs_only_the_first_4096_bytes(tmp_path):
    p = write(tmp_path, "w.txt", " " * 4096 + "5 6\n")
    expected = ("arrivals.format", f"cannot tell the format of {p} (expected a .txt line of integer counts, or "
                ".csv/.jsonl/.parquet timestamps); set format = 'counts' or 'timestamps'")
    assert error(Replay, p) == expected
    assert Replay(p, format="counts").counts.tolist() == [5, 6]


# ---------------------------------------------------------------- counts reader


def test_empty_counts_file(tmp_path):
    p = write(tmp_path, "w.txt", " \n")
    assert error(Replay, p, format="counts") == (str(p), "expected space-separated per-second counts, found none")


def test_counts_not_utf8_names_the_line(tmp_path):
    p = write(tmp_path, "w.txt", b"3\n4\n\xe9 5\n")
    assert error(Replay, p) == (str(p), "not UTF-8 text (byte 0xe9 on line 3); save it as UTF-8")


def test_count_too_large_for_int64_is_named(tmp_path):
    p = write(tmp_path, "w.txt", "1 99999999999999999999 2")
    assert error(Replay, p) == (f"{p} value 2", "expected a non-negative integer count, got '99999999999999999999'")
    p = write(tmp_path, "v.txt", "1 2 9999999999999999999")  # 19 digits, still above 2**63 - 1
    assert error(Replay, p) == (f"{p} value 3", "expected a non-negative integer count, got '9999999999999999999'")


# ---------------------------------------------------------------- timestamps reader


def test_units_scale_to_seconds(tmp_path):
    p = write(tmp_path, "t.csv", "t\n10\n12.5\n20\n")
    assert Replay(p, unit="s").stamps.tolist() == [0.0, 2.5, 10.0]
    assert Replay(p, unit="auto").stamps.tolist() == [0.0, 2.5, 10.0]
    np.testing.assert_allclose(Replay(p, unit="ms").stamps, [0.0, 0.0025, 0.010], rtol=1e-12)
    np.testing.assert_allclose(Replay(p, unit="us").stamps, [0.0, 2.5e-6, 1.0e-5], rtol=1e-12)


def test_explicit_datetime_unit_and_mixed_formats(tmp_path):
    p = write(tmp_path, "t.csv", "t\n2024-01-01 00:00:00\n2024-01-01T00:00:02.5\n2024/01/01 00:00:05\n")
    assert Replay(p, unit="datetime").stamps.tolist() == [0.0, 2.5, 5.0]
    assert Replay(p).stamps.tolist() == [0.0, 2.5, 5.0]


def test_bad_datetime_row_message(tmp_path):
    p = write(tmp_path, "t.csv", "t\n2024-01-01 00:00:00\nnot a date\n")
    assert error(Replay, p) == (f"{p} row 2", "expected a datetime in 't', got 'not a date'")
    assert error(Replay, p, unit="datetime") == (f"{p} row 2", "expected a datetime in 't', got 'not a date'")


def test_missing_number_message(tmp_path):
    p = write(tmp_path, "t.csv", "t,u\n1,a\n,b\n3,c\n")
    assert error(Replay, p) == (f"{p} row 2", "expected a finite number in 't', got nothing")
    q = write(tmp_path, "q.csv", "t\n1\n2\nx\n")
    assert error(Replay, q, unit="s") == (f"{q} row 3", "expected a finite number in 't', got 'x'")


def test_missing_value_in_nullable_parquet_column(tmp_path):
    p = tmp_path / "t.parquet"
    pd.DataFrame({"t": pd.array([1, None, 3], dtype="Int64")}).to_parquet(p)
    assert error(Replay, p) == (f"{p} row 2", "expected a finite number in 't', got nothing")
    q = tmp_path / "q.parquet"
    pd.DataFrame({"t": pd.array([5, 6, 9], dtype="Int64")}).to_parquet(q)
    assert Replay(q).stamps.tolist() == [0.0, 1.0, 4.0]


def test_going_back_names_both_rows_and_values(tmp_path):
    p = write(tmp_path, "t.csv", "t\n1.0\n2.0\n3.0\n2.5\n4.0\n")
    assert error(Replay, p) == (f"{p} row 4",
                                "timestamps must be non-decreasing; 't' goes back from 3.0 (row 3) to 2.5")


def test_empty_table_message(tmp_path):
    p = write(tmp_path, "t.csv", "t\n")
    assert error(Replay, p) == (str(p), "expected at least one timestamp row, found none")


def test_unreadable_table_messages(tmp_path):
    p = write(tmp_path, "t.parquet", "this is not parquet\n")
    where, problem = error(Replay, p)
    assert where == str(p) and problem.startswith("cannot read as a .parquet table: ") and "\n" not in problem
    q = write(tmp_path, "trace", "")  # no suffix: read as csv, and the message says so
    assert error(Replay, q, format="timestamps") == (str(q), "cannot read as a csv table: No columns to parse from file")


def test_ndjson_is_json_lines_with_timestamp_column_by_default(tmp_path):
    rows = [{"id": 7, "timestamp": 100.0}, {"id": 3, "timestamp": 101.5}, {"id": 9, "timestamp": 104.0}]
    p = write(tmp_path, "t.ndjson", "".join(json.dumps(r) + "\n" for r in rows))
    assert Replay(p, format="timestamps").stamps.tolist() == [0.0, 1.5, 4.0]
    q = write(tmp_path, "t.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert Replay(q).stamps.tolist() == [0.0, 1.5, 4.0]
    assert error(Replay, q, column="id")[0] == f"{q} row 2"  # ids go back: the named column is used


def test_jsonl_bad_line_numbers_count_blank_lines(tmp_path):
    long = "[" + ", ".join(["1"] * 40) + "]"
    p = write(tmp_path, "t.jsonl", '{"timestamp": 0}\n\n' + long + "\n")
    assert error(Replay, p) == (f"{p} line 3", f"expected a JSON object, got {long[:60]!r}")
    q = write(tmp_path, "q.jsonl", '{"timestamp": 0}\nnot json\n')
    assert error(Replay, q) == (f"{q} line 2", "expected a JSON object, got 'not json'")


# ---------------------------------------------------------------- window


def test_window_message_names_start_when_length_defaults(tmp_path):
    p = write(tmp_path, "w.txt", "1 2 3 4 5 6 7 8 9 10")
    r = Replay(p, start_s=4)
    assert error(r.times_s, 6.5, rng()) == (
        "arrivals.start_s", f"window [4, 10.5) s (length_s defaults to the simulation duration) exceeds the trace "
        f"span of 10 s in {p}")
    r = Replay(p, start_s=4, length_s=7)
    assert error(r.mean_rate_rps, 7.0)[0] == "arrivals.length_s"
    assert "window [4, 11) s" in error(r.mean_rate_rps, 7.0)[1]


def test_stamp_exactly_at_duration_is_excluded(tmp_path):
    p = write(tmp_path, "t.csv", "t\n0\n1\n2\n3\n4\n5\n")
    r = Replay(p, length_s=5.0)
    assert r.times_s(3.0, rng()).tolist() == [0.0, 1.0, 2.0]
    assert r.mean_rate_rps(3.0) == 1.0  # 3 arrivals in [0, 3)


def test_mean_rate_with_copies_cut_by_duration_and_window(tmp_path):
    # stamps 0, .5, 1.2, 2.7, 3.3, 4.2 lie in the window [0, 4.5); the run lasts 3.2 s; scale 2.5.
    # Each stamp t < 3.2 counts once; each stamp spawns 1.5 expected copies uniform in
    # [floor t, min(floor t + 1, 4.5)), of which the part before 3.2 counts:
    # floors 0, 0, 1, 2 -> whole; 3.3 -> [3, 4) cut at 3.2 -> 0.2; 4.2 -> [4, 4.5) after 3.2 -> 0.
    p = write(tmp_path, "t.csv", "t\n0\n0.5\n1.2\n2.7\n3.3\n4.2\n6.0\n")
    r = Replay(p, length_s=4.5, rate_scale=2.5)
    expected = (4 + 1.5 * (4 + 0.2 + 0.0)) / 3.2
    assert r.mean_rate_rps(3.2) == pytest.approx(expected, rel=1e-12)
    # and the empirical count over seeds agrees (sd of one draw <= sqrt(6 * 0.25); 4 sigma over 400)
    counts = [len(r.times_s(3.2, rng(seed))) for seed in range(400)]
    assert abs(np.mean(counts) - expected * 3.2) < 4 * np.sqrt(1.5 + 6 * 0.25) / np.sqrt(400)


def test_mean_rate_with_copies_in_a_short_last_second(tmp_path):
    # window [0, 3.5): stamp 3.1's copies are uniform in [3, 3.5), all before the end of a 3.5 s run;
    # stamp 2.7's in [2, 3), so all count too: 4 stamps + 1.5 * 4 copies
    p = write(tmp_path, "t.csv", "t\n0\n1.2\n2.7\n3.1\n5.0\n")
    r = Replay(p, length_s=3.5, rate_scale=2.5)
    assert r.mean_rate_rps(3.5) == pytest.approx((4 + 1.5 * 4) / 3.5, rel=1e-12)
    # a 3.25 s run keeps all 4 stamps but only half of 3.1's copy interval [3, 3.5)
    assert r.mean_rate_rps(3.25) == pytest.approx((4 + 1.5 * (3 + 0.5)) / 3.25, rel=1e-12)


def test_a_valid_nineteen_digit_count_is_not_blamed_for_the_one_that_overflows(tmp_path):
    path = tmp_path / "counts.txt"
    path.write_text("1234567890123456789 99999999999999999999\n")
    with pytest.raises(InputError) as info:
        Replay(path, format="counts")._read_counts()
    assert info.value.where == f"{path} value 2"
    assert "'99999999999999999999'" in info.value.problem
