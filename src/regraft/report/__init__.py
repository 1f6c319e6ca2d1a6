"""Renderers: one Report, three formats (table for people, json with a schema version, markdown)."""

from regraft.report.render import render_check, render_card  # noqa: F401
