"""tests/durations.json orders ``make test``'s files, the longest first (tests/conftest.py): every
file it names exists, so a renamed or removed file does not leave a stale entry behind."""

from tests.conftest import DURATIONS, REPO


def test_every_file_in_durations_json_exists_and_has_a_positive_time():
    assert DURATIONS, "tests/durations.json is empty"
    missing = [name for name in DURATIONS if not (REPO / name).is_file()]
    assert missing == [], f"tests/durations.json names files that are gone: {missing}"
    assert all(seconds > 0 for seconds in DURATIONS.values())
