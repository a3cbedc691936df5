"""Stage 4 — measuring models: parameter and MAC counts at stated shapes (``counting``), latency
(``bench``), output agreement (``agreement``) and the ``validate`` command's model-vs-model comparison
(``compare``). Knows nothing of groups or plans.
"""
