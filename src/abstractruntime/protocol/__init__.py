"""The wire protocol: pydantic models, the method table and error codes (defined once)."""

from .methods import BY_NAME, METHODS, REQUEST_NAMES, Method
from .models import PROTOCOL_VERSION

__all__ = ["BY_NAME", "METHODS", "PROTOCOL_VERSION", "REQUEST_NAMES", "Method"]
