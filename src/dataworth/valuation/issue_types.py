"""Why a row is bad: one issue type per flagged row, from evidence calibrated on the clean reference set.

A row is *flagged* when the smaller of its q-values (KAIROS's calibrated value) is at most
``threshold``. Each flagged row gets the first type that fits:

1. ``near-duplicate`` — its nearest other training row ``j`` is closer than clean rows come to the
   training set: the conformal p-value of that distance against the reference rows' distances to
   their nearest training row, Benjamini–Hochberg adjusted over the training rows, is ≤ ``threshold``.
   ``duplicate_of`` names ``j``. (Datalab reports the same type from nearest-neighbour distances.)
2. ``feature-outlier`` — the features are anomalous (feature q ≤ ``threshold``, or the feature
   statistic lies ``FEATURE_Z`` robust standard deviations beyond the clean reference rows' median:
   the q-value cannot go below about 2N / ((M + 1) k) for a group of k rows beyond every reference
   row, so a small group can miss the threshold however far out it lies), and its nearest training row
   has features like clean rows: a row on its own, e.g. noise added to a real row, whose nearest
   neighbour is a clean row.
3. ``out-of-distribution`` — as 2, but its nearest training row's features are anomalous too (by the
   same test, flagged or not): one of a group of rows from another source (or a backdoor's trigger
   cluster).
4. ``label`` — only the label term flagged it: the features look like clean rows, the label does not
   fit them. (Features that are off come first: where the features are unlike any clean row the
   label model has no support, and its residual is large whatever the label.)

Unflagged rows get the empty type. ``issue_q`` is the q-value that flagged the row (its value), or
for a near-duplicate the duplicate test's q-value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dataworth.valuation.calibration import benjamini_hochberg, conformal_p_values

ISSUE_TYPES = ("near-duplicate", "feature-outlier", "out-of-distribution", "label")
#: How far into the clean rows' tail (robust z-score) features count as anomalous without q ≤ threshold.
FEATURE_Z = -4.0


def assign_issue_types(
    values: np.ndarray,
    *,
    q_feature: np.ndarray,
    q_label: np.ndarray | None,
    z_feature: np.ndarray,
    neighbour_distance: np.ndarray,
    neighbour_index: np.ndarray,
    neighbour_null: np.ndarray,
    threshold: float,
) -> pd.DataFrame:
    """The issue table (columns :data:`~dataworth.result.ISSUE_COLUMNS`, one row per training row; see
    the module docstring).

    ``z_feature``: the feature statistic's null z-score (low = anomalous); ``neighbour_distance``/``neighbour_index``: each training row's
    nearest other training row; ``neighbour_null``: each reference row's distance to its nearest
    training row. ``duplicate_of`` is −1 where the type is not ``near-duplicate``.
    """
    n = len(values)
    flagged = values <= threshold
    q_duplicate = benjamini_hochberg(conformal_p_values(neighbour_distance, neighbour_null, upper=False))
    issue = np.full(n, "", dtype=object)
    issue_q = np.full(n, np.nan)
    duplicate = flagged & (q_duplicate <= threshold)
    anomalous = (q_feature <= threshold) | (z_feature <= FEATURE_Z)  # features unlike clean rows', flagged or not
    feature = flagged & ~duplicate & anomalous
    for mask, name in (
        (duplicate, "near-duplicate"),
        (feature & ~anomalous[neighbour_index], "feature-outlier"),
        (feature & anomalous[neighbour_index], "out-of-distribution"),
        (flagged & ~duplicate & ~feature, "label"),
    ):
        issue[mask] = name
    issue_q[flagged] = values[flagged]
    issue_q[duplicate] = q_duplicate[duplicate]
    duplicate_of = np.where(duplicate, neighbour_index, -1)
    return pd.DataFrame({"issue": issue.astype(str), "issue_q": issue_q, "duplicate_of": duplicate_of})
