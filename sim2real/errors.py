"""User-facing errors: the CLI prints them as one line and exits non-zero (no traceback)."""


class Sim2RealError(Exception):
    """Bad input or a state the user can fix (missing file, wrong zarr layout, NaN loss, …).

    Raise it with a message that names the problem and, where possible, the fix. Bugs should stay
    ordinary exceptions so that they keep their traceback.
    """
