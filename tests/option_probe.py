"""A pytest plugin for tests/test_bad_input.py (no test_ prefix: not collected): prints the suite's folder options as
the run sees them once conftest.py has configured it."""
import pytest


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    print(f"cache-dir={config.getoption('--cache-dir')} report-dir={config.getoption('--report-dir')}")
