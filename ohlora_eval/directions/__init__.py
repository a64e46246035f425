"""Edit directions: fitting them (SVM, gradient), storing and reading them."""

from .base import Directions

__all__ = ["Directions"]
