"""Run records: round trip, atomic writes, and rejection of files that are not records."""
import math

import pytest

import records


def sample_record() -> records.RunRecord:
    row = {column: float(i) for i, column in enumerate(records.COLUMNS)}
    row.update(epoch=0, susceptibility=math.nan)
    return records.RunRecord({"args": {"model": "cnn", "lr": 0.1}, "noise": {"ground_truth": True}}, [row])


def test_round_trip_keeps_meta_and_rows_including_missing_values(tmp_path):
    path = tmp_path / "r.csv"
    records.write_record(path, sample_record())
    back = records.read_record(path)
    assert back.meta == sample_record().meta
    assert back.rows[0]["epoch"] == 0 and math.isnan(back.rows[0]["susceptibility"])
    assert back.rows[0]["seconds"] == float(records.COLUMNS.index("seconds"))


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "r.csv"
    records.write_record(path, sample_record())
    before = path.read_bytes()

    def crash(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        records.atomic_write(path, crash)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_a_record_with_a_short_row_is_rejected(tmp_path):
    path = tmp_path / "r.csv"
    records.write_record(path, records.RunRecord({}, sample_record().rows * 2))
    path.write_text(path.read_text().rstrip("\n").rsplit(",", 1)[0] + "\n")
    with pytest.raises(ValueError, match="epoch row 2 does not have one cell per column"):
        records.read_record(path)


def test_a_csv_that_is_not_a_record_is_rejected(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a run record"):
        records.read_record(path)
