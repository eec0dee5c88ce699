"""`boxlite.boxlite`: the names of the package, where programs written for the reference
product import them from (`from boxlite.boxlite import SecurityOptions`)."""

from . import *  # noqa: F401,F403
from . import __all__  # noqa: F401
