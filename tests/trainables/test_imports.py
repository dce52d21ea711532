import gc

import pytest

from trainables.imports import collector_paused


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_the_collector_is_off_inside_and_back_on_after_even_on_an_error(collector_on):
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested: the inner block leaves it to the outer one
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ImportError), collector_paused():
        import no_such_module_here  # noqa: F401
    assert gc.isenabled()


def test_a_collector_the_program_turned_off_stays_off(collector_on):
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
