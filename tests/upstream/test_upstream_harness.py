"""The harness of DockerSpawner's suite: the comparison of the two runs, the sdist's checks (no engine)."""

import io
import tarfile

import pytest

from upstream_suite import compare, fetch_sdist, load_differences, unpack_tests

PASSED, FAILED = {"outcome": "passed"}, {"outcome": "failed", "message": "AssertionError"}


def test_a_regression_on_ours_that_is_not_listed_fails_the_comparison():
    stock = {"t.py::a": PASSED, "t.py::b": PASSED}
    ours = {"t.py::a": PASSED, "t.py::b": FAILED}
    assert compare(stock, ours, {}) == [
        "t.py::b: passes on DockerSpawner, failed on MLHubDockerSpawner, and is not an intended "
        "difference (AssertionError)"
    ]
    assert compare(stock, ours, {"t.py::b": "our state holds the workspace's options"}) == []


def test_a_listed_difference_that_passes_on_ours_or_does_not_exist_is_stale():
    stock = ours = {"t.py::a": PASSED}
    problems = compare(stock, ours, {"t.py::a": "reason", "t.py::gone": "reason"})
    assert problems == [
        "t.py::a: listed as an intended difference but passes on ours (remove the entry)",
        "t.py::gone: listed as an intended difference but not in the suite (remove it)",
    ]


def test_a_test_failing_on_the_stock_class_means_the_harness_is_wrong():
    problems = compare({"t.py::a": FAILED}, {"t.py::a": FAILED}, {})
    assert problems == ["t.py::a: failed on the stock class too (AssertionError)"]
    assert compare({"t.py::a": PASSED}, {}, {}) == ["the runs collected different tests: ['t.py::a']"]


def test_an_empty_reason_is_no_reason():
    assert compare({"t.py::a": PASSED}, {"t.py::a": FAILED}, {"t.py::a": "  "})


def _sdist(tmp_path, members):
    path = tmp_path / "dockerspawner-0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_only_the_sdists_tests_are_unpacked_and_never_outside_the_folder(tmp_path):
    sdist = _sdist(
        tmp_path,
        {"dockerspawner-0/tests/test_a.py": "x = 1\n", "dockerspawner-0/dockerspawner/__init__.py": ""},
    )
    root = unpack_tests(sdist, tmp_path / "out")
    assert (root / "tests/test_a.py").read_text() == "x = 1\n"
    assert not (root / "dockerspawner").exists() and (root / "pytest.ini").is_file()
    evil = _sdist(tmp_path, {"dockerspawner-0/tests/../../../evil.py": "boom\n"})
    with pytest.raises(tarfile.OutsideDestinationError):
        unpack_tests(evil, tmp_path / "evil")
    assert not (tmp_path / "evil.py").exists()
    with pytest.raises(RuntimeError, match="ships no tests/ folder"):
        unpack_tests(_sdist(tmp_path, {"dockerspawner-0/setup.py": ""}), tmp_path / "none")


def test_an_sdist_whose_checksum_is_not_the_pinned_one_is_refused(tmp_path):
    pinned = load_differences()
    wrong = "0" * 64
    # a file under the cache's name for that checksum is checked, not trusted: it is fetched again...
    (tmp_path / f"dockerspawner-{pinned.version}-{wrong[:16]}.tar.gz").write_bytes(b"not the sdist")
    # ... and the registry's file, which has another checksum, is refused
    with pytest.raises(RuntimeError, match=f"has sha256 {pinned.sha256}, not the {wrong}"):
        fetch_sdist(pinned.version, wrong, cache_dir=tmp_path, timeout=300)
    assert [path.name for path in tmp_path.iterdir()] == [
        f"dockerspawner-{pinned.version}-{wrong[:16]}.tar.gz"
    ]
