"""Will it carry over? Pure rules over already-read specs, run by :func:`regraft.checks.engine.check`."""
