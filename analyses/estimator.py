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

from interp.validate import int_arg, is_number_column

from .table import LABELS, RULE_SCORES, _did_you_mean, label_head, near_miss_columns, thresholds_arg


def _unique_columns(df: pd.DataFrame, cols: list[str]) -> None:
    """ValueError naming the score columns `cols` that X holds more than once."""
    twice = sorted({str(c) for c in df.columns[df.columns.duplicated()] if c in cols})
    if twice:
        raise ValueError(f"X has the column(s) {twice} more than once; give each score one column")


class HeadClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, method: str = "rules", thresholds: dict | None = None, n_clusters: int = 6,
                 score_columns: str | tuple | None = None, random_state: int = 0):
        self.method = method
        self.thresholds = thresholds
        self.n_clusters = n_clusters
        self.score_columns = score_columns
        self.random_state = random_state

    def _score_columns(self) -> list[str] | None:
        """score_columns as a list: None, one column name, or a sequence of distinct names."""
        cols = self.score_columns
        if cols is None:
            return None
        if isinstance(cols, str):
            return [cols]
        if not isinstance(cols, (list, tuple, np.ndarray, pd.Index)) or not all(isinstance(c, str) for c in cols):
            raise TypeError(f"score_columns must be None, a column name or a list of column names, got {cols!r:.80}")
        if len(cols) == 0 or len(set(cols)) != len(cols):
            raise ValueError(f"score_columns must name distinct columns, at least one (None: the rule scores), "
                             f"got {list(cols)}")
        return list(cols)

    def _frame(self, X, cols: list[str] | None) -> pd.DataFrame:
        """X as a DataFrame; an array's columns are `cols` (score_columns in fit, the fitted columns in predict)."""
        if isinstance(X, pd.DataFrame):
            return X
        try:
            X = np.asarray(X, dtype=float)
        except (TypeError, ValueError) as e:
            raise TypeError(f"X must be a DataFrame of heads or a numeric [heads, scores] array ({e})") from None
        if X.ndim != 2:
            raise ValueError(f"X must be a table of heads x scores, got shape {X.shape}")
        if cols is None:
            raise ValueError("an array X needs score_columns naming its columns (or pass a DataFrame)")
        if len(cols) != X.shape[1]:
            raise ValueError(f"X has {X.shape[1]} columns, expected {len(cols)}: {cols}")
        return pd.DataFrame(X, columns=cols)

    def _columns(self, df: pd.DataFrame, cols: list[str] | None) -> list[str]:
        if cols is None:  # the rule scores X has: a misspelt one would be left out silently
            near_miss_columns(list(df.columns), "HeadClassifier", "X")
        cols = cols or [c for c in RULE_SCORES.values() if c in df]
        missing = [c for c in cols if c not in df]
        if missing or not cols:
            hint = _did_you_mean(missing[0], [c for c in df.columns if isinstance(c, str)]) if missing else ""
            raise ValueError(f"X lacks score columns {missing or list(RULE_SCORES.values())}{hint}; it has "
                             f"{list(df.columns)[:12]}")
        if self.method == "rules" and not set(cols) & set(RULE_SCORES.values()):
            raise ValueError(f"method='rules' labels heads by the rule scores {list(RULE_SCORES.values())}; "
                             f"score_columns {cols} has none of them")
        _unique_columns(df, cols)
        return cols

    @staticmethod
    def _numeric(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
        bad = [c for c in cols if not is_number_column(df[c])]
        if bad:
            raise TypeError(f"X's score columns must hold numbers; {bad} hold {[str(df[c].dtype) for c in bad]}")
        return df

    def _finite_for_kmeans(self, Z: np.ndarray, cols: list[str]) -> np.ndarray:
        inf = [c for c, bad in zip(cols, np.isinf(Z).any(axis=0)) if bad]
        if inf:
            raise ValueError(f"X has infinite values (inf or -inf) in {inf}; k-means needs finite scores "
                             "(NaN counts as 0)")
        return np.nan_to_num(Z, nan=0.0)

    def _labels(self, y, n: int) -> np.ndarray:
        y = np.asarray(y, dtype=object)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D, one known label per head, got shape {y.shape}")
        if len(y) != n:
            raise ValueError(f"y has {len(y)} labels for {n} heads")
        unknown = sorted({repr(v.item() if isinstance(v, np.generic) else v) for v in y
                          if not isinstance(v, str) or v not in LABELS})
        if unknown:
            raise ValueError(f"y has labels {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} that are not "
                             f"head labels; allowed: {list(LABELS)}")
        return y.astype(str)

    def fit(self, X, y=None):
        if self.method not in ("rules", "kmeans"):
            raise ValueError(f"method must be 'rules' or 'kmeans', got {self.method!r}")
        thresholds = thresholds_arg(self.thresholds, "HeadClassifier")
        df = self._frame(X, self._score_columns())
        cols = self._columns(df, self._score_columns())
        if len(df) == 0:
            raise ValueError("X has no heads (0 rows)")
        self.feature_names_in_ = np.array(cols, dtype=object)
        self.scores_ = self._numeric(df, cols)[cols].to_numpy(dtype=float)
        if self.method == "rules":
            self.thresholds_ = thresholds
            if y is not None:
                self.thresholds_.update(self._calibrate(df, self._labels(y, len(df))))
            self.labels_ = np.array([label_head(r, self.thresholds_) for r in df[cols].to_dict("records")])
        else:
            from sklearn.cluster import KMeans
            from sklearn.preprocessing import StandardScaler

            k = int_arg("n_clusters", self.n_clusters, minimum=1, maximum=len(df), where="HeadClassifier")
            Z = self._finite_for_kmeans(self.scores_, cols)
            self.scaler_ = StandardScaler().fit(Z)
            self.kmeans_ = KMeans(n_clusters=k, n_init=10, random_state=self.random_state)
            self.labels_ = self.kmeans_.fit_predict(self.scaler_.transform(Z))
            self.cluster_centers_ = pd.DataFrame(
                self.scaler_.inverse_transform(self.kmeans_.cluster_centers_), columns=cols)
        self.classes_ = np.unique(self.labels_)
        return self

    def _calibrate(self, df: pd.DataFrame, y: np.ndarray) -> dict:
        """Per role with known examples: the threshold that best separates those heads from the rest (balanced
        accuracy over a grid), so the toy models' known heads set the rules."""
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
        cols = list(self.feature_names_in_)
        df = self._frame(X, cols)
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"X lacks the score columns {missing} that the classifier was fitted on ({cols})")
        _unique_columns(df, cols)
        self._numeric(df, cols)
        if self.method == "rules":
            return np.array([label_head(r, self.thresholds_) for r in df[cols].to_dict("records")])
        Z = self._finite_for_kmeans(df[cols].to_numpy(dtype=float), cols)
        return self.kmeans_.predict(self.scaler_.transform(Z))
