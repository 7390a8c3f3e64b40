# make_coxme_breslow.R -- coxme with Breslow ties, and survival curves at the fitted values.
#
# Run from this folder:   R_LIBS=<library with coxme> Rscript make_coxme_breslow.R
# Writes:  expected_coxme_breslow.json
# Needs:   survival, coxme 2.2-22 (+ bdsmatrix 1.3-7), json_writer.R, cohort_heterogeneous.csv
#          (made by make_coxme.R; the data are not simulated again here).
#
# Complements expected_coxme.json (Efron only):
#   1. the three coxme models of make_coxme.R with ties = "breslow", same tight control:
#        a) (1 | centre)   b) strata(centre) + (ctc_positive | centre)
#        c) (1 + ctc_positive | centre)
#      the estimate, and the fit with the variance parameters held at the estimate
#      (vfixed; coef, vcov, ranef, log-likelihoods, df at a given variance);
#   2. for the Efron fits (a) and (b) at their estimated variances (vfixed at coxme's
#      estimate, as recorded in expected_coxme.json), survival curves of one patient
#      in centre C01 (ctc_positive 1, age 60, node_positive 0, grade3 1):
#      survfit() of coxph(Surv ~ lp [+ strata(centre)], init = 1, iter.max = 0), lp the fitted
#      linear predictor x'beta + z'b of every patient (coefficient held at 1), evaluated at
#      the patient's lp.
#      This is the Efron (resp. Breslow) baseline hazard at the mixed-model estimates,
#      i.e. the point estimate of the centre-specific survival curve. (coxme has no
#      survival curves of its own.) survfit's standard errors are not recorded: with
#      the coefficients held fixed they ignore their uncertainty.
suppressPackageStartupMessages({
  library(survival)
  library(coxme)
})
source("json_writer.R")
RNGkind("Mersenne-Twister", "Inversion", "Rejection")
set.seed(1)   # nothing here is random; set for safety

het <- read.csv("cohort_heterogeneous.csv", stringsAsFactors = FALSE)
ctl <- coxme.control(eps = 1e-12, toler.chol = 1e-14, iter.max = 100L, inner.iter = 30L,
                     optpar = list(method = "BFGS",
                                   control = list(reltol = 1e-11, maxit = 1000L)))
f_a <- Surv(os_months, os_event) ~ ctc_positive + age + node_positive + grade3 + (1 | centre)
f_b <- Surv(os_months, os_event) ~ ctc_positive + age + node_positive + grade3 +
  strata(centre) + (ctc_positive | centre)
f_c <- Surv(os_months, os_event) ~ ctc_positive + age + node_positive + grade3 +
  (1 + ctc_positive | centre)

mat_json <- function(m) list(names = rownames(m), matrix = unname(m))
theta_of <- function(fit) {
  vc <- VarCorr(fit)[[1]]
  if (is.matrix(vc)) c(vc[1, 1], vc[1, 2], vc[2, 2]) else unname(vc)
}
ranef_json <- function(fit) {
  r <- ranef(fit)[[1]]
  if (is.matrix(r)) {
    c(list(centre = rownames(r)), setNames(lapply(seq_len(ncol(r)), function(j) unname(r[, j])),
                                           colnames(r)))
  } else list(centre = names(r), value = unname(r))
}
summary_json <- function(fit) {
  V <- vcov(fit)
  list(coef = fixef(fit), vcov = mat_json(V), ranef = ranef_json(fit),
       loglik = list(`NULL` = fit$loglik[["NULL"]], Integrated = fit$loglik[["Integrated"]],
                     Penalized = fit$loglik[["Penalized"]]),
       penalty = fit$penalty,
       df = list(integrated = fit$df[1], penalized = fit$df[2]))
}
breslow <- function(formula) {
  est <- coxme(formula, data = het, control = ctl, refine.n = 0, ties = "breslow")
  theta <- theta_of(est)
  at <- coxme(formula, data = het, control = ctl, refine.n = 0, ties = "breslow",
              vfixed = theta)
  list(formula = paste(deparse(formula, width.cutoff = 500L), collapse = " "),
       ties = est$ties, n = est$n[[2]], events = est$n[[1]],
       theta = theta,
       theta_note = "variance (and for c: var_intercept, correlation, var_slope) at coxme's optimum",
       estimate = summary_json(est),
       at_theta = summary_json(at))
}
res_breslow <- list(a_random_intercept = breslow(f_a), b_random_slope_strata = breslow(f_b),
                    c_random_intercept_slope = breslow(f_c))

# ---- survival curves at the Efron estimates (vfixed = coxme's estimate) -----------------
newpat <- data.frame(ctc_positive = 1, age = 60, node_positive = 0, grade3 = 1)
times <- c(6, 12, 24, 36, 60, 96, 120)
curve <- function(formula, stratified, ties) {
  est <- coxme(formula, data = het, control = ctl, refine.n = 0, ties = ties)
  theta <- theta_of(est)
  fit <- coxme(formula, data = het, control = ctl, refine.n = 0, ties = ties, vfixed = theta)
  beta <- fixef(fit)
  re <- ranef(fit)[[1]]
  b <- if (is.matrix(re)) re[, 1] else re
  bvec <- b[het$centre]
  X <- as.matrix(het[, names(beta)])
  zcol <- if (stratified) het$ctc_positive else rep(1, nrow(het))
  het$lp <- drop(X %*% beta) + bvec * zcol
  new_lp <- sum(unlist(newpat[names(beta)]) * beta) +
    b[["C01"]] * (if (stratified) newpat$ctc_positive else 1)
  # the linear predictor as a covariate with its coefficient held at 1 (iter.max = 0):
  # survfit() does not accept an offset-only model
  one <- coxph.control(iter.max = 0)
  if (stratified) {
    cf <- coxph(Surv(os_months, os_event) ~ lp + strata(centre), data = het, ties = ties,
                init = 1, control = one)
    nd <- data.frame(lp = new_lp, centre = "C01")
  } else {
    cf <- coxph(Surv(os_months, os_event) ~ lp, data = het, ties = ties, init = 1,
                control = one)
    nd <- data.frame(lp = new_lp)
  }
  sf <- survfit(cf, newdata = nd)
  s <- summary(sf, times = times, extend = TRUE)
  list(theta = theta, coef = beta, centre = "C01", random_effect = b[["C01"]],
       newdata = as.list(newpat), times = times, survival = s$surv, cumhaz = s$cumhaz)
}
curves <- list(
  a_random_intercept_efron = curve(f_a, FALSE, "efron"),
  b_random_slope_strata_efron = curve(f_b, TRUE, "efron"),
  a_random_intercept_breslow = curve(f_a, FALSE, "breslow")
)

out <- json_header(
  pkgs = c("survival", "coxme", "bdsmatrix"),
  data_files = "cohort_heterogeneous.csv",
  control = list(coxme = list(eps = ctl$eps, toler.chol = ctl$toler.chol,
                              iter.max = ctl$iter.max, inner.iter = ctl$inner.iter,
                              optim_method = "BFGS",
                              optim_reltol = ctl$optpar$control$reltol,
                              optim_maxit = ctl$optpar$control$maxit, refine.n = 0)))
out$breslow <- res_breslow
out$survival_curves <- curves
out$notes <- c(
  "breslow$*$at_theta: coxme with vfixed at the estimate; compare fixed-variance quantities at ~1e-9.",
  "breslow$*$theta: coxme's optimum; optim's stopping rule leaves it good to ~1e-7 (a, b) and ~1e-5 (c, log scale), so compare an estimate at ~1e-5 relative.",
  "survival_curves: survfit of coxph(Surv ~ lp, init = 1, iter.max = 0) at the mixed model's linear predictor; survival = exp(-cumhaz) with the Efron (resp. Breslow) baseline hazard.")
write_json_file(out, "expected_coxme_breslow.json")
cat("wrote expected_coxme_breslow.json\n")
