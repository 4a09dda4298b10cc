"""Day-ahead price forecasters on the feature service ``day_ahead_v1``.

- :mod:`models.featureframe`: the feature-frame contract and its checks;
- :mod:`models.forecaster`: the ``Forecaster`` interface (fit / quantile predict);
- :mod:`models.naive`, :mod:`models.lear`, :mod:`models.lightgbm_forecaster`: the forecasters;
- :mod:`models.conformal`, :mod:`models.ensemble`: wrappers that are forecasters too;
- :mod:`models.metrics`: MAE, rMAE, sMAPE, RMSE, pinball, coverage, Diebold–Mariano;
- :mod:`models.dayblock`: pivoting a delivery day's rows into 24 local hours;
- :mod:`models.trainingframe`: in-memory feature frames for tests and studies;
- :mod:`models.mlflow_model`: the MLflow adapter (the only module importing mlflow).
"""
