"""``th.signal``: torch.signal's window functions as factories with ``split=``."""
from . import windows  # noqa: F401
