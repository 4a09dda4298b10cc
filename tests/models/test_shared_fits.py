"""Shared fits: an equal forecaster on equal training data is fitted once inside ``shared_fits()``."""

import numpy as np
import pytest
from modelframes import days_between

from features.errors import FeatureFrameError, NotFittedError
from models.ensemble import QuantileAverageEnsemble
from models.forecaster import shared_fits
from models.lear import LEAR
from models.naive import WeeklyNaive


@pytest.fixture(scope="module")
def split(syn):
    features, target = syn
    return features, target, days_between(features, "2023-01-15", "2023-04-01"), days_between(features, "2023-04-01", "2023-04-08")


def test_the_lear_of_an_ensemble_and_a_lone_lear_on_the_same_rows_are_fitted_once(split, monkeypatch):
    features, target, train, test = split
    fresh = LEAR(windows=(28, 56)).fit(features[train], target[train]).predict(features[test])
    calls = []
    original = LEAR._fit_market
    monkeypatch.setattr(LEAR, "_fit_market", lambda self, *a: calls.append(1) or original(self, *a))
    with shared_fits() as fits:
        ensemble = QuantileAverageEnsemble([WeeklyNaive(), LEAR(windows=(28, 56))]).fit(features[train], target[train])
        lone = LEAR(windows=(28, 56)).fit(features[train], target[train])
    assert (fits.hits, fits.misses, len(calls)) == (1, 1, 1)
    shared = lone.predict(features[test])
    assert shared.equals(fresh)  # the shared fit is the fit: same numbers as fitting afresh
    assert ensemble.fitted_members_[1].predict(features[test]).equals(fresh)


def test_different_data_or_parameters_or_no_block_are_fitted_again(split):
    features, target, train, _ = split
    changed = target.copy()
    changed[np.flatnonzero(train)[-1]] += 1.0  # one price of the last training hour
    with shared_fits() as fits:
        a = LEAR(windows=(28,)).fit(features[train], target[train])
        b = LEAR(windows=(28,)).fit(features[train], changed[train])
        LEAR(windows=(56,)).fit(features[train], target[train])
        LEAR(windows=(28,), alpha_rule="aic").fit(features[train], target[train])
        WeeklyNaive().fit(features[train], target[train])  # states no fit key: never shared
        WeeklyNaive().fit(features[train], target[train])
    assert (fits.hits, fits.misses) == (0, 4)
    assert not np.array_equal(a.models_["SYN_NORTH"].windows[0].coef, b.models_["SYN_NORTH"].windows[0].coef)
    c = LEAR(windows=(28,)).fit(features[train], target[train])  # outside the block: a fresh fit
    assert c.models_["SYN_NORTH"] is not a.models_["SYN_NORTH"]


def test_recalibration_keeps_the_penalties_refits_the_coefficients_and_changes_no_shared_state(split):
    features, target, train, test = split
    later = days_between(features, "2023-01-22", "2023-04-08")  # a week on: the newest rows replace the oldest
    with shared_fits() as fits:
        lone = LEAR(windows=(28, 56), recalibrate=True).fit(features[train], target[train])
        ensemble = QuantileAverageEnsemble([WeeklyNaive(), LEAR(windows=(28, 56), recalibrate=True)]).fit(
            features[train], target[train])
        before = lone.predict(features[test])
        assert ensemble.recalibrates and lone.recalibrates
        ensemble.recalibrate(features[later], target[later])
        moved = ensemble.fitted_members_[1]
        # the member's fit was the lone model's (shared): recalibrating it left that state as it was
        assert lone.predict(features[test]).equals(before)
        lone.recalibrate(features[later], target[later])
    assert (fits.hits, fits.misses) == (2, 2)  # the second fit and the second recalibration were shared
    member_windows, new = (m.models_["SYN_NORTH"].windows for m in (moved, lone))
    assert moved is not lone and member_windows is new  # equal rows: one recalibrated state
    fresh = LEAR(windows=(28, 56), recalibrate=True).fit(features[train], target[train])
    for w_fit, w_new in zip(fresh.models_["SYN_NORTH"].windows, new):
        np.testing.assert_array_equal(w_fit.alpha, w_new.alpha)  # the penalties of the fit
        assert w_new.days_used == w_fit.days_used and not np.allclose(w_fit.coef, w_new.coef)
    assert not np.allclose(lone.predict(features[test])["q50"], before["q50"])


def test_recalibration_is_refused_when_unfitted_switched_off_or_for_other_markets(split):
    features, target, train, _ = split
    with pytest.raises(NotFittedError):
        LEAR(recalibrate=True).recalibrate(features[train], target[train])
    with pytest.raises(NotImplementedError, match="LEAR does not recalibrate"):
        LEAR(windows=(28,)).fit(features[train], target[train]).recalibrate(features[train], target[train])
    model = LEAR(windows=(28,), recalibrate=True).fit(features[train], target[train])
    with pytest.raises(FeatureFrameError, match=r"markets \['FR'\]; the model was fitted on \['SYN_NORTH'\]"):
        model.recalibrate(features[train].assign(market="FR"), target[train])
