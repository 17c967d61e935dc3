"""The ``confab`` command line for platform engineers."""
