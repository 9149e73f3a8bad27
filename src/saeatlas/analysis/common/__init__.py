"""What every analysis shares, so no analysis imports another: the config mechanism
(``config``), the output contract and its writer (``output``), the report-section interface
(``section``), input checks (``inputs``), statistics (``stats``), linear algebra (``linalg``),
thread control (``threads``), plotting (``plotting``), linear probes (``probes``) and the
first-letter task of probing and absorption (``first_letter``); progress bars are ``saeatlas.progress``."""
