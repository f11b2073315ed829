"""Report: the paper's Table 1 layout with our and the paper's numbers, paired differences, plots.

Entry point: :func:`llara.report.build.build_report`. Published numbers live in
:mod:`llara.report.paper` as data with their sources.
"""
