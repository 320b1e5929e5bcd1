"""The statistics of Semantic Coverage Imbalance, on arrays: coverage of (class, descriptor, subgroup)
groups, the Coverage Disparity Index, evaluation metrics and paired comparisons between methods."""
