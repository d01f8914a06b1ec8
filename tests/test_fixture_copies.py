"""The fixture copies in tests/ are the shared golden files, byte for byte."""
import pytest

from tests.reference import FIXTURE_DIR, FIXTURE_FILES, SHARED_FIXTURE_DIR, load


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixture_copy_is_byte_identical_to_shared(name):
    shared = SHARED_FIXTURE_DIR / name
    if not shared.exists():
        pytest.skip("only in the maintainers' checkout: the originals of tests/fixtures/reference "
                    "are not part of a clone (the golden tests use the copies, so nothing is missed)")
    assert (FIXTURE_DIR / name).read_bytes() == shared.read_bytes()


@pytest.mark.parametrize("name", [n for n in FIXTURE_FILES if n.endswith(".pt")])
def test_fixture_loads_with_weights_only(name):
    assert isinstance(load(name), dict)
