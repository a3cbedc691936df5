"""Front-end — the JSON report of a prune (``prune_report``) and its HTML rendering (``html``).
"""
