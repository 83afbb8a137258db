"""HeadClassifier: the per-head labelling as a scikit-learn estimator.

    clf = HeadClassifier().fit(table)                  # rules with the default thresholds
    clf = HeadClassifier().fit(table, known_labels)    # thresholds calibrated on heads whose role is known
    clf = HeadClassifier(method="kmeans", n_clusters=5).fit(table)   # unsupervised: discover head types
    clf.labels_, clf.scores_, clf.predict(other_table)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .table import DEFAULT_THRESHOLDS, RULE_SCORES, label_head


class HeadClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, method: str = "rules", thresholds: dict | None = None, n_clusters: int = 6,
                 score_columns: tuple | None = None, random_state: int = 0):
        self.method = method
        self.thresholds = thresholds
        self.n_clusters = n_clusters
        self.score_columns = score_columns
        self.random_state = random_state

    def _frame(self, X) -> pd.DataFrame:
        if isinstance(X, pd.DataFrame):
            return X
        cols = self.score_columns
        if cols is None and hasattr(self, "feature_names_in_"):
            cols = tuple(self.feature_names_in_)
        X = np.asarray(X, dtype=float)
        if X.ndim != 2:
            raise ValueError(f"X must be a table of heads x scores, got shape {X.shape}")
        if cols is None or len(cols) != X.shape[1]:
            raise ValueError("an array X needs score_columns naming its columns")
        return pd.DataFrame(X, columns=list(cols))

    def _columns(self, df: pd.DataFrame) -> list[str]:
        cols = list(self.score_columns) if self.score_columns else [c for c in RULE_SCORES.values() if c in df]
        missing = [c for c in cols if c not in df]
        if missing or not cols:
            raise ValueError(f"X lacks score columns {missing or list(RULE_SCORES.values())}")
        return cols

    def fit(self, X, y=None):
        if self.method not in ("rules", "kmeans"):
            raise ValueError(f"method must be 'rules' or 'kmeans', got {self.method!r}")
        df = self._frame(X)
        cols = self._columns(df)
        self.feature_names_in_ = np.array(cols, dtype=object)
        self.scores_ = df[cols].to_numpy(dtype=float)
        if self.method == "rules":
            self.thresholds_ = dict(DEFAULT_THRESHOLDS, **(self.thresholds or {}))
            if y is not None:
                self.thresholds_.update(self._calibrate(df, np.asarray(y)))
            self.labels_ = np.array([label_head(r, self.thresholds_) for r in df[cols].to_dict("records")])
        else:
            from sklearn.cluster import KMeans
            from sklearn.preprocessing import StandardScaler

            Z = np.nan_to_num(self.scores_, nan=0.0)
            self.scaler_ = StandardScaler().fit(Z)
            self.kmeans_ = KMeans(n_clusters=self.n_clusters, n_init=10, random_state=self.random_state)
            self.labels_ = self.kmeans_.fit_predict(self.scaler_.transform(Z))
            self.cluster_centers_ = pd.DataFrame(
                self.scaler_.inverse_transform(self.kmeans_.cluster_centers_), columns=cols)
        self.classes_ = np.unique(self.labels_)
        return self

    def _calibrate(self, df: pd.DataFrame, y: np.ndarray) -> dict:
        """Per role with known examples: the threshold that best separates those heads from the rest (balanced
        accuracy over a grid), so the toy models' known heads set the rules."""
        if len(y) != len(df):
            raise ValueError(f"y has {len(y)} labels for {len(df)} heads")
        out = {}
        for label, col in RULE_SCORES.items():
            if col not in df or not (y == label).any() or (y == label).all():
                continue
            s = df[col].to_numpy(dtype=float)
            pos = y == label
            best, best_t = -1.0, None
            for t in np.linspace(0.05, 0.95, 91):
                hit = np.nan_to_num(s) >= t
                bal = 0.5 * (hit[pos].mean() + (~hit[~pos]).mean())
                if bal > best + 1e-12:
                    best, best_t = bal, float(t)
            out[col] = best_t
        return out

    def predict(self, X):
        check_is_fitted(self, "labels_")
        df = self._frame(X)
        cols = list(self.feature_names_in_)
        if self.method == "rules":
            return np.array([label_head(r, self.thresholds_) for r in df[cols].to_dict("records")])
        Z = np.nan_to_num(df[cols].to_numpy(dtype=float), nan=0.0)
        return self.kmeans_.predict(self.scaler_.transform(Z))
