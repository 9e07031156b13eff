"""The ``taskmill`` command."""
