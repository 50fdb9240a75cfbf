"""pytest settings shared by the tests and the notebook runs (nbval)."""


def pytest_collection_modifyitems(items):
    # nbval gives a finished cell's output messages only 5 s to arrive. On a busy 2-core machine (CI, a workshop
    # laptop) a kernel that has just loaded several models can take longer to flush them; 5 s then fails a correct
    # cell. Cell *execution* keeps its own limit (pytest-timeout in pyproject.toml).
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = 120
