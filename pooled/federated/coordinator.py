"""What the coordinator does: ask every centre, combine the answers, iterate.

Every function here takes an ``ask`` callable, ``ask(method, parameters) -> list of answers``
(one per centre), and never sees a patient row. On vantage6 ``ask`` creates a subtask for
the partial function ``method`` at every organisation and waits for the results
(:mod:`pooled.federated.algorithm`); in tests it may call the centre functions directly.
:class:`Exchange` wraps ``ask`` to count the rounds and the bytes each analysis exchanged.

The one-stage Cox model (:func:`federated_cox`) is the pooled fit, step by step: the
stratified partial likelihood with centre strata is a sum over centres, so the sums of the
centres' log-likelihoods, scores and informations at the current coefficients are the pooled
ones, and the Newton-Raphson iteration with R's step-halving and convergence rule
(:func:`pooled.models.cox.cox_fit_arrays`) visits the same coefficients. The per-term
likelihood-ratio tests refit the model without each term, all in the same rounds. The robust
variance clustered by centre needs only each centre's score vector at the estimate (a sum of
its patients' score residuals), which every Newton round already returns; R's robust score
test needs them at zero, which the first round returns.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg
from scipy import stats

from pooled.errors import ConfigError, ConvergenceWarning, DataError, FewClustersWarning
from pooled.federated.disclosure import DisclosureRefused, message_bytes
from pooled.federated.request import FederatedRequest
from pooled.models.cox import cox_covariance, raise_singular
from pooled.results import tidy_frame

__all__ = [
    "Ask",
    "Exchange",
    "FederatedCoxResult",
    "KMBinnedResult",
    "federated_cox",
    "federated_describe",
    "federated_km",
    "federated_logrank",
    "federated_two_stage",
    "federated_validation",
]

Ask = Callable[[str, dict[str, Any]], list[dict[str, Any]]]
_Z975 = float(stats.norm.ppf(0.975))


@dataclass
class Exchange:
    """Counts the rounds and bytes of the messages exchanged through ``ask``.

    A round is one request to every centre and their answers; ``bytes_sent`` counts the
    request once per centre (vantage6 sends each organisation its own, encrypted, copy),
    ``bytes_received`` the answers as JSON.
    """

    ask: Ask
    rounds: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    by_method: dict[str, int] = field(default_factory=dict)

    def __call__(self, method: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
        answers = self.ask(method, parameters)
        self.rounds += 1
        self.bytes_sent += message_bytes(
            {"method": method, "kwargs": {"parameters": parameters}}
        ) * max(len(answers), 1)
        self.bytes_received += sum(message_bytes(a) for a in answers)
        self.by_method[method] = self.by_method.get(method, 0) + 1
        return answers

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "rounds_by_method": dict(self.by_method),
        }


def raise_refusals(answers: Sequence[Mapping[str, Any]]) -> None:
    """Raise the first refusal (or error) among the centres' answers."""
    for answer in answers:
        refused = answer.get("refused")
        if refused:
            raise DisclosureRefused(refused["rule"], refused["message"], refused.get("centre", ""))
        error = answer.get("error")
        if error:
            kind = error.get("kind", "Error")
            text = f"centre {answer.get('centre', '?')}: {error.get('message', '')}"
            raise (ConfigError(text) if kind == "ConfigError" else DataError(text))


def _refusal(answer: Mapping[str, Any]) -> str:
    refused = answer.get("refused") or {}
    if refused:
        return f"refused by disclosure rule '{refused['rule']}'"
    error = answer.get("error") or {}
    return f"error at the centre: {error.get('message', '')}"


# --------------------------------------------------------------------------------------------
# One-stage Cox
# --------------------------------------------------------------------------------------------


_SUMMED = "The information matrix summed over the centres"


def _check_singular(info: np.ndarray, names: Sequence[str]) -> None:
    raise_singular(info, names, matrix=_SUMMED, advice="Remove or recode that term.")


def _solve(info: np.ndarray, u: np.ndarray) -> np.ndarray:
    try:
        factor = scipy.linalg.cho_factor(info, lower=True, check_finite=False)
        return scipy.linalg.cho_solve(factor, u, check_finite=False)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(info, u, rcond=None)[0]


class _Newton:
    """Newton-Raphson with R's step-halving and convergence rule, one evaluation at a time
    (the loop of :func:`pooled.models.cox.cox_fit_arrays`, turned inside out)."""

    def __init__(
        self, init: np.ndarray, names: Sequence[str], *, tol: float, max_iter: int
    ) -> None:
        self.names = list(names)
        self.tol, self.max_iter = tol, max_iter
        self.beta = np.asarray(init, dtype=np.float64).copy()
        self.pending: np.ndarray | None = self.beta.copy()
        self.started = False
        self.halving = False
        self.converged = False
        self.iterations = 0
        self.loglik = self.loglik_init = self.score_test = float("nan")
        self.u = np.zeros(len(self.beta))
        self.info = np.zeros((len(self.beta), len(self.beta)))
        self.parts_init: list[np.ndarray] = []
        self.parts: list[np.ndarray] = []
        self.new_parts: list[np.ndarray] = []

    @property
    def done(self) -> bool:
        return self.pending is None

    def feed(self, loglik: float, u: np.ndarray, info: np.ndarray, parts: list[np.ndarray]) -> None:
        """The sums at ``self.pending``; ``parts`` the centres' score vectors there."""
        assert self.pending is not None
        if not self.started:
            self.started = True
            self.loglik = self.loglik_init = loglik
            self.u, self.info, self.parts_init, self.parts = u, info, parts, parts
            _check_singular(info, self.names)
            step = _solve(info, u)
            self.score_test = float(u @ step)
            self.pending = self.beta + step
            return
        self.iterations += 1
        newbeta = self.pending
        finite = bool(np.isfinite(loglik))
        if finite and abs(1.0 - self.loglik / loglik) <= self.tol and not self.halving:
            self._accept(newbeta, loglik, u, info, parts)
            self.converged = True
            self.pending = None
        elif self.iterations == self.max_iter:
            if finite and loglik >= self.loglik:
                self._accept(newbeta, loglik, u, info, parts)
            self.pending = None
        elif not finite or loglik < self.loglik:
            self.halving = True
            self.pending = (newbeta + self.beta) / 2.0
        else:
            self.halving = False
            self._accept(newbeta, loglik, u, info, parts)
            self.pending = self.beta + _solve(self.info, self.u)

    def _accept(
        self,
        beta: np.ndarray,
        loglik: float,
        u: np.ndarray,
        info: np.ndarray,
        parts: list[np.ndarray],
    ) -> None:
        self.beta, self.loglik, self.u, self.info, self.parts = beta, loglik, u, info, parts


@dataclass(frozen=True, slots=True)
class FederatedCoxResult:
    """A federated one-stage Cox fit: the :class:`~pooled.models.cox.CoxResult` the pooled
    data would give (Harrell's C is not computed: NaN), the centres' counts and the exchange.
    """

    cox: Any
    centres: pd.DataFrame
    exchange: dict[str, Any]

    def to_frame(self) -> pd.DataFrame:
        """The tidy rows of :meth:`CoxResult.to_frame`, with ``federated = True``."""
        return self.cox.to_frame().assign(federated=True)


def _centres_used(answers: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(a.get("centre", i)) for i, a in enumerate(answers)]


def consortium_levels(
    request: FederatedRequest, answers: Sequence[Mapping[str, Any]]
) -> dict[str, list[str]]:
    """Each categorical term's levels over the consortium: reference first, then sorted."""
    out: dict[str, list[str]] = {}
    for column, reference in request.categorical:
        union = sorted({str(v) for a in answers for v in a["levels"].get(column, [])})
        if str(reference) not in union:
            raise DataError(
                f"Categorical covariate '{column}': reference level '{reference}' expected among "
                f"the analysed patients; the centres hold levels {union}. Choose one of these."
            )
        if len(union) < 2:
            raise DataError(
                f"Categorical covariate '{column}' has a single level {union[0]!r} in every "
                "centre; it has no effect to estimate. Remove it."
            )
        out[column] = [str(reference)] + [v for v in union if v != str(reference)]
    return out


def federated_cox(
    ask: Ask,
    request: FederatedRequest,
    *,
    robust: bool = True,
    term_lr_tests: bool = True,
    tol: float = 1e-10,
    max_iter: int = 30,
) -> FederatedCoxResult:
    """The stratified (by centre) Cox model of ``request``, fitted by distributed Newton steps.

    Equal to :func:`pooled.models.cox.fit_cox` on the pooled patients with
    ``CoxSpec(strata=request.strata, cluster="centre" if robust else None)``: coefficients,
    model-based and robust covariance, log-likelihoods, the LR, Wald and score tests, the
    robust score test and, with ``term_lr_tests``, each term's likelihood-ratio p-value.

    Parameters
    ----------
    ask : callable
        ``ask(method, parameters)``: one answer per centre (see the module docstring).
    request : FederatedRequest
    robust : bool
        Add the sandwich covariance clustered by centre (``coxph(..., cluster = centre)``).
    term_lr_tests : bool
        Refit without each term (in the same rounds) for per-term LR p-values.
    tol, max_iter
        Convergence, as :class:`~pooled.models.cox.CoxSpec`.

    Raises
    ------
    DisclosureRefused
        A centre refused the request (the rule and the centre are named).

    References
    ----------
    .. [1] Lu CL, Wang S, Ji Z, et al. WebDISCO: a web service for distributed Cox model
       learning without patient-level data sharing. J Am Med Inform Assoc 2015;22:1212-9.
    .. [2] Lin DY, Wei LJ. The robust inference for the Cox proportional hazards model.
       J Am Stat Assoc 1989;84:1074-8.

    Examples
    --------
    >>> # federated_cox(Exchange(ask), request_from_config(cfg, "dfs")).cox.coefficients
    """
    from pooled.models.cox import CoxResult, CoxSpec, generalised_wald

    exchange = ask if isinstance(ask, Exchange) else Exchange(ask)
    req = request.to_dict()
    summary = exchange("partial_summary", {"request": req})
    raise_refusals(summary)
    levels = consortium_levels(request, summary)
    centres = _centres_used(summary)

    def evaluate(fits: Sequence[tuple[_Newton, list[int] | None]]) -> None:
        evaluations = [
            {"beta": np.asarray(f.pending, dtype=float).tolist(), "columns": cols}
            for f, cols in fits
        ]
        answers = exchange(
            "partial_cox", {"request": req, "levels": levels, "evaluations": evaluations}
        )
        raise_refusals(answers)
        for a in answers:
            if tuple(a["terms"]) != names:
                raise DataError(
                    f"centre {a.get('centre')} built the terms {a['terms']}; expected {list(names)}."
                )
        for k, (fit, _) in enumerate(fits):
            p = len(fit.beta)
            parts = [np.asarray(a["evaluations"][k]["score"], dtype=float) for a in answers]
            fit.feed(
                float(sum(a["evaluations"][k]["loglik"] for a in answers)),
                np.sum(parts, axis=0),
                np.sum(
                    [
                        np.asarray(a["evaluations"][k]["information"], dtype=float).reshape(p, p)
                        for a in answers
                    ],
                    axis=0,
                ),
                parts,
            )
        return None

    names = term_names(request, levels)
    p = len(names)
    main = _Newton(np.zeros(p), names, tol=tol, max_iter=max_iter)
    while not main.done:
        evaluate([(main, None)])
    beta, info, u = main.beta, main.info, main.u
    covariance = cox_covariance(
        info,
        u,
        beta,
        names,
        converged=main.converged,
        not_converged=(
            f"Federated Cox fit did not converge in {max_iter} iterations (relative change in "
            f"log-likelihood above tol={tol})."
        ),
        matrix=_SUMMED,
        advice="Remove or recode that term.",
    )
    wald = float(beta @ info @ beta)
    robust_cov = None
    n_clusters = None
    robust_wald, wald_rank, robust_score, score_rank = float("nan"), 0, float("nan"), 0
    if robust:
        n_clusters = len(main.parts)
        summed = np.array([part @ covariance for part in main.parts])
        robust_cov = summed.T @ summed
        scores = np.array(main.parts_init)
        robust_wald, wald_rank = generalised_wald(beta, robust_cov, max_rank=n_clusters - 1)
        robust_score, score_rank = generalised_wald(scores.sum(axis=0), scores.T @ scores)
        if score_rank >= n_clusters:
            robust_score = float("nan")
        if n_clusters <= p or wald_rank < p:
            warnings.warn(
                f"The cluster-robust covariance rests on {n_clusters} centres for {p} "
                f"coefficients (rank {wald_rank}); the robust Wald test uses a generalised "
                f"inverse on {wald_rank} df.",
                FewClustersWarning,
                stacklevel=2,
            )
    lr_p = None
    if term_lr_tests:
        lr_p = np.full(p, np.nan)
        if p == 1:
            lr_p[0] = stats.chi2.sf(2.0 * (main.loglik - main.loglik_init), 1)
        else:
            subs = []
            for j in range(p):
                keep = [k for k in range(p) if k != j]
                subs.append(
                    (
                        _Newton(beta[keep], [names[k] for k in keep], tol=tol, max_iter=max_iter),
                        keep,
                    )
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                while any(not s.done for s, _ in subs):
                    evaluate([(s, cols) for s, cols in subs if not s.done])
            for j, (sub, _) in enumerate(subs):
                lr_p[j] = stats.chi2.sf(max(2.0 * (main.loglik - sub.loglik), 0.0), 1)
    n = int(sum(a["n"] for a in summary))
    events = int(sum(a["events"] for a in summary))
    spec = CoxSpec(
        duration=request.duration,
        event=request.event,
        covariates=request.terms,
        categorical=request.categorical,
        interactions=request.interactions,
        strata=request.strata,
        ties=request.ties,  # type: ignore[arg-type]
        cluster="centre" if robust else None,
        tol=tol,
        max_iter=max_iter,
        term_lr_tests=term_lr_tests,
        concordance=False,
        analysis=request.analysis,
        endpoint=request.endpoint,
    )
    dropped = pd.DataFrame(
        {
            "centre": [c for c, a in zip(centres, summary, strict=True) if a["n_dropped"] != 0],
            "reason": "missing: a term, the outcome or a stratum",
            "n_dropped": [a["n_dropped"] for a in summary if a["n_dropped"] != 0],
        }
    )
    sources = _term_sources(request, levels)
    cox = CoxResult(
        spec=spec,
        term_names=names,
        term_sources=sources,
        coefficients=beta,
        covariance=covariance,
        robust_covariance=robust_cov,
        loglik=main.loglik,
        loglik_null=main.loglik_init,
        score_test=main.score_test,
        wald_test=robust_wald if robust_cov is not None else wald,
        wald_df=wald_rank if robust_cov is not None else p,
        robust_score_test=robust_score,
        robust_score_df=score_rank,
        n_clusters=n_clusters,
        iterations=main.iterations,
        converged=main.converged,
        n=n,
        events=events,
        dropped=dropped,
        levels=tuple((c, tuple(v)) for c, v in levels.items()),
        lr_p_values=lr_p,
    )
    table = pd.DataFrame(
        {
            "centre": centres,
            "n": [a["n"] for a in summary],
            "events": [a["events"] for a in summary],
            "n_dropped": [a["n_dropped"] for a in summary],
        }
    )
    return FederatedCoxResult(cox=cox, centres=table, exchange=exchange.as_dict())


def term_names(request: FederatedRequest, levels: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The design's column names, as every centre builds them (R's names)."""
    blocks = {
        t: [f"{t}{level}" for level in levels[t][1:]] if t in levels else [t] for t in request.terms
    }
    names = [name for t in request.terms for name in blocks[t]]
    for a, b in request.interactions:
        names += [f"{na}:{nb}" for nb in blocks[b] for na in blocks[a]]
    return tuple(names)


def _term_sources(
    request: FederatedRequest, levels: Mapping[str, Sequence[str]]
) -> tuple[str, ...]:
    widths = {t: (len(levels[t]) - 1 if t in levels else 1) for t in request.terms}
    sources = [t for t in request.terms for _ in range(widths[t])]
    for a, b in request.interactions:
        sources += [f"{a}:{b}"] * (widths[a] * widths[b])
    return tuple(sources)


# --------------------------------------------------------------------------------------------
# Log-rank
# --------------------------------------------------------------------------------------------


def federated_logrank(ask: Ask, request: FederatedRequest) -> tuple[Any, dict[str, Any]]:
    """The log-rank test of the exposure groups stratified by centre (R's ``survdiff(... +
    strata(centre))``) from each centre's observed, expected and variance sums.

    Returns the :class:`~pooled.models.km.LogrankResult` and the exchange counts.
    """
    from pooled.models.km import LogrankResult

    exchange = ask if isinstance(ask, Exchange) else Exchange(ask)
    answers = exchange("partial_logrank", {"request": request.to_dict()})
    raise_refusals(answers)
    groups = sorted({g for a in answers for g in a["groups"]}, key=lambda v: (str(type(v)), v))
    index = {g: i for i, g in enumerate(groups)}
    k = len(groups)
    n = np.zeros(k, dtype=np.int64)
    observed, expected, variance = np.zeros(k), np.zeros(k), np.zeros((k, k))
    for a in answers:
        pos = [index[g] for g in a["groups"]]
        m = len(pos)
        n[pos] += np.asarray(a["n"], dtype=np.int64)
        observed[pos] += a["observed"]
        expected[pos] += a["expected"]
        variance[np.ix_(pos, pos)] += np.asarray(a["variance"], dtype=float).reshape(m, m)
    keep = expected > 0
    df = int(keep.sum()) - 1
    if df < 1:
        chisq, df = 0.0, 0
    else:
        diff = (observed - expected)[keep][1:]
        vv = variance[np.ix_(keep, keep)][1:, 1:]
        chisq = float(np.sum(np.linalg.solve(vv, diff) * diff))
    result = LogrankResult(
        group=request.exposure_spec.name,
        groups=tuple(groups),
        n=n,
        observed=observed,
        expected=expected,
        variance=variance,
        chisq=chisq,
        df=df,
        p_value=float(stats.chi2.sf(chisq, df)) if df > 0 else float("nan"),
        strata=tuple(request.strata),
        n_strata=len(answers),
        endpoint=request.endpoint,
    )
    return result, exchange.as_dict()


# --------------------------------------------------------------------------------------------
# Kaplan-Meier in bins
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KMBinnedResult:
    """Kaplan-Meier estimates from counts in time bins, summed over centres.

    ``table`` has one row per group and bin: ``group, start, end, at_risk, events, censored,
    survival, std_err, ci_lower, ci_upper``; the survival at a bin's ``end`` is the product
    over bins of ``1 - events / (at_risk - censored / 2)`` (the actuarial life table, since
    only counts per bin leave the centres), with Greenwood's SE and a log-log interval.
    ``centres`` lists the centres that contributed; ``excluded`` those that refused, with why.
    """

    table: pd.DataFrame
    width: float
    endpoint: str
    group: str
    centres: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...] = ()
    exchange: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        rows = [
            {
                "analysis": "kaplan_meier_binned",
                "endpoint": self.endpoint,
                "model": "life_table_federated",
                "term": "survival",
                "estimate": r.survival,
                "std_error": r.std_err,
                "ci_lower": r.ci_lower,
                "ci_upper": r.ci_upper,
                "events": r.events,
                "group": f"{self.group}={r.group}",
                "time": r.end,
                "n_risk": r.at_risk,
                "n_censor": r.censored,
            }
            for r in self.table.itertuples(index=False)
        ]
        return tidy_frame(rows)


def life_table(at_risk: np.ndarray, events: np.ndarray, censored: np.ndarray) -> pd.DataFrame:
    """Actuarial survival, Greenwood SE and log-log 95% interval at each bin's end."""
    at_risk = np.asarray(at_risk[: len(events)], dtype=float)
    events = np.asarray(events, dtype=float)
    censored = np.asarray(censored, dtype=float)
    effective = at_risk - censored / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(effective > 0, events / effective, 0.0)
        survival = np.cumprod(1.0 - q)
        term = np.where(
            (effective > 0) & (effective > events), events / (effective * (effective - events)), 0.0
        )
        var_log = np.cumsum(term)
        std_err = survival * np.sqrt(var_log)
        log_s = np.log(survival)
        se_loglog = np.sqrt(var_log) / np.abs(log_s)
        lower = np.exp(-np.exp(np.log(-log_s) + _Z975 * se_loglog))
        upper = np.exp(-np.exp(np.log(-log_s) - _Z975 * se_loglog))
    flat = (survival >= 1.0) | (survival <= 0.0)
    lower = np.where(flat, np.nan, lower)
    upper = np.where(flat, np.nan, upper)
    return pd.DataFrame(
        {"survival": survival, "std_err": std_err, "ci_lower": lower, "ci_upper": upper}
    )


def federated_km(
    ask: Ask,
    request: FederatedRequest,
    *,
    width: float = 12.0,
    max_time: float = 120.0,
    exclude_refusing: bool = False,
) -> KMBinnedResult:
    """Kaplan-Meier curves by exposure group from counts in bins of ``width`` (months).

    Each centre releases, per group, the patients at risk at each bin edge and the events
    and censored in each bin (no times); the coordinator adds them and computes the life
    table up to ``max_time`` (the same for every centre; default 120 months). With ``exclude_refusing`` a centre that refuses (a cell under the minimum) is left
    out and listed; otherwise its refusal stops the analysis.
    """
    exchange = ask if isinstance(ask, Exchange) else Exchange(ask)
    req = request.to_dict()
    answers = exchange("partial_km", {"request": req, "width": width, "max_time": max_time})
    excluded = []
    kept = []
    for a in answers:
        if a.get("refused") or a.get("error"):
            if not exclude_refusing:
                raise_refusals([a])
            excluded.append((str(a.get("centre", "?")), _refusal(a)))
        else:
            kept.append(a)
    if not kept:
        raise DataError(
            "No centre released Kaplan-Meier counts: " + "; ".join(f"{c}: {r}" for c, r in excluded)
        )
    n_bins = kept[0]["n_bins"]
    edges = np.arange(n_bins + 1) * width
    totals: dict[Any, list[np.ndarray]] = {}
    for a in kept:
        for curve in a["curves"]:
            acc = totals.setdefault(
                curve["group"], [np.zeros(n_bins + 1), np.zeros(n_bins), np.zeros(n_bins)]
            )
            acc[0] += curve["at_risk"]
            acc[1] += curve["events"]
            acc[2] += curve["censored"]
    frames = []
    for group in sorted(totals, key=lambda v: (str(type(v)), v)):
        at_risk, ev, cens = totals[group]
        lt = life_table(at_risk, ev, cens)
        frames.append(
            pd.DataFrame(
                {
                    "group": group,
                    "start": edges[:-1],
                    "end": edges[1:],
                    "at_risk": at_risk[:-1].astype(np.int64),
                    "events": ev.astype(np.int64),
                    "censored": cens.astype(np.int64),
                }
            ).join(lt)
        )
    return KMBinnedResult(
        table=pd.concat(frames, ignore_index=True),
        width=float(width),
        endpoint=request.endpoint,
        group=request.exposure_spec.name,
        centres=tuple(str(a["centre"]) for a in kept),
        excluded=tuple(excluded),
        exchange=exchange.as_dict(),
    )


# --------------------------------------------------------------------------------------------
# Two-stage
# --------------------------------------------------------------------------------------------


def federated_two_stage(
    ask: Ask, request: FederatedRequest, *, method: str = "REML", knha: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Two-stage analysis: each centre's own Cox estimate of the exposure, pooled here by
    :func:`pooled.models.meta.fit_meta` (``rma``). A centre that refuses or cannot estimate
    stays in the table, not included, with its reason.

    Returns the :class:`~pooled.models.two_stage.TwoStageResult` and the exchange counts.
    """
    from pooled.models.cox import CoxSpec
    from pooled.models.meta import MetaSpec, fit_meta
    from pooled.models.two_stage import PER_CENTRE_COLUMNS, TwoStageResult, TwoStageSpec

    exchange = ask if isinstance(ask, Exchange) else Exchange(ask)
    answers = exchange("partial_two_stage", {"request": request.to_dict()})
    rows = []
    for a in answers:
        bad = a.get("refused") or a.get("error")
        rows.append(
            {
                "centre": a.get("centre", "?"),
                "n": a.get("n", np.nan) if not bad else np.nan,
                "events": a.get("events", np.nan) if not bad else np.nan,
                "n_dropped": np.nan,
                "log_hr": a.get("log_hr") if a.get("log_hr") is not None else np.nan,
                "se": a.get("se") if a.get("se") is not None else np.nan,
                "included": bool(a.get("included", False)) and not bad,
                "reason": _refusal(a) if bad else a.get("reason", ""),
                "note": a.get("note", ""),
                **{
                    k: (np.nan if a.get(k) is None else a[k])
                    for k in (
                        "n_marker_positive",
                        "events_marker_positive",
                        "n_marker_negative",
                        "events_marker_negative",
                    )
                },  # fmt: skip
            }
        )
    table = pd.DataFrame(rows).sort_values("centre", kind="stable").reset_index(drop=True)
    table["hr"] = np.exp(table["log_hr"])
    table["ci_lower"] = np.exp(table["log_hr"] - _Z975 * table["se"])
    table["ci_upper"] = np.exp(table["log_hr"] + _Z975 * table["se"])
    included = table["included"].to_numpy(dtype=bool)
    if not included.any():
        reasons = "; ".join(
            f"{c}: {r}" for c, r in zip(table["centre"], table["reason"], strict=True)
        )
        raise DataError(f"Two-stage analysis: no centre gives an estimate ({reasons}).")
    meta_spec = MetaSpec(method=method, knha=knha)  # type: ignore[arg-type]
    marker = request.exposure_spec.name
    meta = fit_meta(
        table.loc[included, "log_hr"].to_numpy(),
        table.loc[included, "se"].to_numpy() ** 2,
        meta_spec,
        labels=list(table.loc[included, "centre"]),
        term=marker,
    )
    weights = dict(zip(meta.per_study["label"], meta.per_study["weight_percent"], strict=True))
    table["weight_percent"] = [weights.get(c, np.nan) for c in table["centre"]]
    spec = TwoStageSpec(
        cox=CoxSpec(
            duration=request.duration,
            event=request.event,
            covariates=request.terms,
            categorical=request.categorical,
            strata=(),
            ties=request.ties,  # type: ignore[arg-type]
            analysis=request.analysis,
            endpoint=request.endpoint,
        ),
        marker=marker,
        meta=meta_spec,
    )
    result = TwoStageResult(per_centre=table[list(PER_CENTRE_COLUMNS)], meta=meta, spec=spec)
    return result, exchange.as_dict()


# --------------------------------------------------------------------------------------------
# Descriptive tables and validation summaries
# --------------------------------------------------------------------------------------------


def federated_describe(
    ask: Ask, request: FederatedRequest, *, variables: Sequence[str] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The characteristics table by exposure group over the centres, small cells suppressed
    at each centre.

    Rows: ``variable, level, group, n, percent`` for categorical variables (``level`` =
    ``"missing"`` for missing values) and ``variable, level = "mean (SD)", group, n, mean,
    sd`` for numeric ones (pooled exactly from the centres' sums); ``suppressed_centres``
    counts the centres whose cell was suppressed (the pooled count then leaves them out).
    """
    exchange = ask if isinstance(ask, Exchange) else Exchange(ask)
    parameters: dict[str, Any] = {"request": request.to_dict()}
    if variables:
        parameters["variables"] = list(variables)
    answers = exchange("partial_describe", parameters)
    raise_refusals(answers)
    cells: dict[tuple[str, str, str], dict[str, float]] = {}
    group_n: dict[str, dict[str, float]] = {}

    def cell(key: tuple[str, str, str]) -> dict[str, float]:
        return cells.setdefault(key, {"n": 0.0, "sum": 0.0, "sum_squares": 0.0, "suppressed": 0.0})

    order: list[str] = list(answers[0]["variables"]) if answers else []
    kinds: dict[str, str] = {}
    for a in answers:
        for g in a["groups"]:
            label = str(g["group"])
            acc = group_n.setdefault(label, {"n": 0.0, "suppressed": 0.0})
            if g["n"] is None:
                acc["suppressed"] += 1
                continue
            acc["n"] += g["n"]
            for name, d in g["variables"].items():
                kinds[name] = d["kind"]
                if d["kind"] == "categorical":
                    for level, count in [
                        *zip(d["levels"], d["counts"], strict=True),
                        ("missing", d["missing"]),
                    ]:
                        c = cell((name, str(level), label))
                        if count is None:
                            c["suppressed"] += 1
                        else:
                            c["n"] += count
                else:
                    c = cell((name, "mean (SD)", label))
                    if d["n"] is None:
                        c["suppressed"] += 1
                    else:
                        c["n"] += d["n"]
                        c["sum"] += d["sum"]
                        c["sum_squares"] += d["sum_squares"]
    rows = []
    for (name, level, label), c in sorted(
        cells.items(),
        key=lambda kv: (
            order.index(kv[0][0]) if kv[0][0] in order else 99,
            kv[0][2],
            kv[0][1] == "missing",
            kv[0][1],
        ),
    ):
        total = group_n.get(label, {}).get("n", np.nan)
        row: dict[str, Any] = {"variable": name, "level": level, "group": label, "n": c["n"],
                               "suppressed_centres": int(c["suppressed"])}  # fmt: skip
        if kinds.get(name) == "numeric":
            m = c["n"]
            mean = c["sum"] / m if m > 0 else np.nan
            var = (c["sum_squares"] - c["sum"] ** 2 / m) / (m - 1) if m > 1 else np.nan
            row.update(
                mean=mean,
                sd=float(np.sqrt(max(var, 0.0))) if np.isfinite(var) else np.nan,
                percent=np.nan,
            )
        else:
            row.update(mean=np.nan, sd=np.nan, percent=100.0 * c["n"] / total if total else np.nan)
        rows.append(row)
    return pd.DataFrame(rows), exchange.as_dict()


def federated_validation(
    ask: Ask, *, request_id: str = "", policy: Mapping[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Each centre's validation findings by rule and severity (counts under the minimum
    cell shown as ``"<5"``-style ``None``): ``centre, rule, severity, findings``."""
    exchange = ask if isinstance(ask, Exchange) else Exchange(ask)
    answers = exchange(
        "partial_validation", {"request_id": request_id, "policy": dict(policy or {})}
    )
    raise_refusals(answers)
    rows = [
        {
            "centre": a["centre"],
            "rule": r["rule"],
            "severity": r["severity"],
            "findings": r["findings"],
        }
        for a in answers
        for r in a["rules"]
    ]
    frame = pd.DataFrame(rows, columns=["centre", "rule", "severity", "findings"])
    return frame.sort_values(["centre", "severity", "rule"], kind="stable").reset_index(
        drop=True
    ), exchange.as_dict()


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays, frames (as records) converted; NaN kept."""
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.DataFrame):
        return [_plain(r) for r in value.to_dict("records")]
    if value is pd.NA or value is pd.NaT:
        return None
    return value
