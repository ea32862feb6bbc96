"""Real-data benchmarks: the whole pipeline (convert, plan, train, predict, evaluate, analyse)
on a public data set, with every model under the same protocol and the same budget.

``nnunet-iph benchmark ctich`` runs it on the PhysioNet CT-ICH scans (:mod:`.ctich`); the
protocols are TOML files in ``benchmarks/ctich/`` (:mod:`.protocol`).
"""
