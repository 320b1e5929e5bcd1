"""semcov_lib: Semantic Coverage Imbalance (SCI) analysis and mitigation.

Sub-modules are imported on demand so that ``import semcov_lib`` stays cheap
(torch is only loaded by the modelling and training modules).
"""

__version__ = "0.1.0"
