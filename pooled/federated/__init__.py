"""Federated analysis on vantage6: the same one-stage stratified Cox, with no patient row
leaving a centre.

Layout (the centre side never imports vantage6; only :mod:`pooled.federated.algorithm` does):

``request``      the JSON request every centre receives and the cohort/design it builds from it
``cox_sums``     a centre's log partial likelihood, score and information at given coefficients
``centre``       the centre-side functions: pure functions of the centre's data and the request,
                 each answer checked by ``disclosure`` before it leaves
``disclosure``   the disclosure rules, small-cell suppression and the release log
``coordinator``  combining the answers: distributed Newton for Cox, log-rank, binned KM,
                 two-stage pooling with ``rma``, descriptive tables, validation summaries
``algorithm``    the vantage6 partial and central functions (``PKG_NAME`` of the image)
``local``        stores or upload folders as centres of vantage6's in-process MockAlgorithmClient
``server``       running the central functions on a real vantage6 server with its client
"""
