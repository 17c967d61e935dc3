"""``confab bench``: load scenarios against a whole local stack, measured from the OS."""
