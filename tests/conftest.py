"""Every test runs unchanged on 1, 2 and 3 processes (see tests/run.sh).

Missing rules are never hidden: the fallback policy is "error" for the whole suite.
"""
import pytest
import torch

import torchheat as th

torch.set_num_threads(1)
th.config.fallback = "error"


@pytest.fixture
def comm():
    return th.get_comm()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_terminal_summary(terminalreporter):
    """Coverage per family of the tests that declare one (``record_property("family", ...)``,
    as tests/test_opinfo.py does): passed / all, skipped (excluded) ops counted as not passed,
    and the passed ones that never gathered a whole input (``record_property("whole_gather", ...)``)."""
    tally = {}
    for outcome in ("passed", "failed", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            props = dict(getattr(report, "user_properties", ()))
            family = props.get("family")
            if family is not None and report.when == "call":
                passed, local, total = tally.get(family, (0, 0, 0))
                ok = outcome == "passed"
                tally[family] = (passed + ok, local + (ok and not props.get("whole_gather", False)), total + 1)
    if not tally:
        return
    terminalreporter.write_sep("=", "coverage per family (ops passed / ops in the family; passed without a whole-input gather)")
    for family, (passed, local, total) in sorted(tally.items()) + [("total", tuple(map(sum, zip(*tally.values()))))]:
        terminalreporter.write_line(
            f"{family:>12}: {passed:4d} / {total:4d}  ({100 * passed / total:5.1f}%);  "
            f"without a gather {local:4d} / {total:4d}  ({100 * local / total:5.1f}%)"
        )
