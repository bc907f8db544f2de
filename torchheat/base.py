"""scikit-learn's estimator contract for torchheat's estimators.

An estimator's ``__init__`` stores its hyperparameters unchanged (one keyword argument per
parameter, same name); :class:`BaseEstimator` reads them back from the signature for
``get_params``/``set_params``/``repr``, so ``sklearn.base.clone`` works on torchheat
estimators. Learned state ends in ``_`` and :func:`check_is_fitted` guards the methods that
need it. Nothing here communicates.

Examples
--------
>>> import torchheat as th
>>> class Scale(th.base.TransformerMixin, th.base.BaseEstimator):
...     def __init__(self, factor=2.0):
...         self.factor = factor
...     def fit(self, x, y=None):
...         self.factor_ = self.factor
...         return self
...     def transform(self, x):
...         th.base.check_is_fitted(self, "factor_")
...         return x * self.factor_
>>> Scale(3.0).get_params()
{'factor': 3.0}
>>> Scale().set_params(factor=4.0)
Scale(factor=4.0)
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Iterable, Optional, Union

__all__ = ["BaseEstimator", "TransformerMixin", "ClusterMixin", "NotFittedError", "check_is_fitted"]


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (a ValueError and an AttributeError, as in
    scikit-learn).

    >>> import torchheat as th
    >>> issubclass(th.NotFittedError, (ValueError, AttributeError))
    True
    """


class BaseEstimator:
    """Base class of the estimators: ``get_params``, ``set_params`` and ``repr`` from the
    keyword arguments of ``__init__``.

    >>> import torchheat as th
    >>> class Est(th.base.BaseEstimator):
    ...     def __init__(self, k=1, tol=0.1):
    ...         self.k, self.tol = k, tol
    >>> Est(k=3)
    Est(k=3)
    >>> Est().set_params(tol=0.5).get_params()
    {'k': 1, 'tol': 0.5}
    """

    @classmethod
    def _get_param_names(cls) -> list:
        init = cls.__init__
        if init is object.__init__:
            return []
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.kind == p.VAR_POSITIONAL:
                raise RuntimeError(f"{cls.__name__}.__init__ must not take *args (scikit-learn's contract)")
        return sorted(p.name for p in params if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        """The hyperparameters by name; with ``deep``, those of nested estimators as
        ``name__param`` too."""
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params: Any) -> "BaseEstimator":
        """Set hyperparameters (``name__param`` reaches nested estimators); returns self."""
        valid = self.get_params(deep=True)
        nested: Dict[str, Dict[str, Any]] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {self}. "
                    f"Valid parameters are: {self._get_param_names()!r}.")
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
                valid[name] = value
        for name, sub_params in nested.items():
            valid[name].set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        # like scikit-learn: only the parameters that differ from their defaults
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        shown = []
        for name, value in self.get_params(deep=False).items():
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = default is not inspect.Parameter.empty and bool(value == default)
            except Exception:  # arrays and tensors compare elementwise
                same = value is default
            if not same:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


class TransformerMixin:
    """``fit_transform(x, y=None, **fit_params)``: ``fit`` then ``transform``."""

    def fit_transform(self, x, y=None, **fit_params):
        return self.fit(x, y, **fit_params).transform(x)


class ClusterMixin:
    """``fit_predict(x, y=None, **fit_params)``: ``fit`` then the learned ``labels_``."""

    def fit_predict(self, x, y=None, **fit_params):
        self.fit(x, y, **fit_params)
        return self.labels_


def check_is_fitted(estimator: Any, attributes: Optional[Union[str, Iterable[str]]] = None) -> None:
    """Raise :class:`NotFittedError` unless ``estimator`` has the fitted ``attributes``
    (default: any attribute ending in ``_``, as scikit-learn).

    >>> import torchheat as th
    >>> class Est(th.base.BaseEstimator):
    ...     pass
    >>> try:
    ...     th.base.check_is_fitted(Est(), "coef_")
    ... except th.NotFittedError as e:
    ...     print(type(e).__name__)
    NotFittedError
    """
    if attributes is None:
        fitted = any(k.endswith("_") and not k.startswith("__") for k in vars(estimator))
    else:
        names = [attributes] if isinstance(attributes, str) else list(attributes)
        fitted = all(hasattr(estimator, a) for a in names)
    if not fitted:
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
            "appropriate arguments before using this estimator.")
