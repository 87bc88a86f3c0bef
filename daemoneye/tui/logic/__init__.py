"""The dashboard's business logic as plain functions and small classes.

Nothing here imports Textual (a test checks it): sorting, tree building, filtering, formatting,
severity order and the row diff that drives every live table are tested without a terminal.
"""
