from pathlib import Path

from execution_grid.run_log import RunLog, read_run_log
from execution_grid.run_store import RunStore, safe_run_id


def test_a_small_log_is_kept_whole(tmp_path: Path) -> None:
    log = RunLog(tmp_path, max_bytes=1000)
    log.write(b"hello\n")
    log.write(b"world\n")
    log.close()

    assert read_run_log(tmp_path) == b"hello\nworld\n"


def test_a_huge_log_keeps_its_head_and_its_tail_within_the_cap(tmp_path: Path) -> None:
    log = RunLog(tmp_path, max_bytes=4000)
    lines = [f"line {n:06d}\n".encode() for n in range(10_000)]
    for line in lines:
        log.write(line)
    log.close()

    kept = read_run_log(tmp_path)
    on_disk = sum(path.stat().st_size for path in tmp_path.iterdir())
    assert on_disk <= 4000
    assert kept.startswith(b"".join(lines[:10]))
    assert kept.endswith(b"".join(lines[-10:]))
    assert b"output dropped here" in kept


def test_the_tail_can_be_asked_for_alone(tmp_path: Path) -> None:
    log = RunLog(tmp_path, max_bytes=1000)
    log.write(b"a" * 100 + b"END")
    log.close()

    assert read_run_log(tmp_path, tail_bytes=3) == b"END"


def test_a_corrupt_run_record_is_set_aside_instead_of_stopping_recovery(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    (tmp_path / "run-bad").mkdir()
    (tmp_path / "run-bad" / "launch.json").write_text("{torn")
    (tmp_path / "run-ok").mkdir()

    unfinished = store.unfinished()

    assert [record.run_id for record in unfinished] == ["run-ok"]
    assert (tmp_path / "run-bad.corrupt").is_dir()


def test_run_ids_that_could_escape_the_directory_are_unsafe() -> None:
    assert safe_run_id("run-0123abc")
    for unsafe in ("../x", "run-1\n", ".hidden", "a/b", "", "x" * 65, "run.1"):
        assert not safe_run_id(unsafe), unsafe
