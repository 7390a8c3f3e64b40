# make_estimators.R -- R's numbers for the estimator fixes: robust Cox tests with few
# clusters, meta-analysis with large tau^2 and a single study, Kaplan-Meier confidence limits
# where S = 1 and survival at fixed times, and flexmix's BIC.
#
# Run from this folder:   Rscript make_estimators.R
# Writes:  veteran.csv, aml.csv, km_small.csv, normand1999.csv  (the data, CRLF, as read back)
#          expected_estimators.json                              (byte-identical on every rerun)
# Needs:   survival 3.5-3, metafor 3.8-1 (+ metadat), flexmix 2.3-18, json_writer.R and
#          cohort_multicentre.csv, serial_ctc.csv (this folder).  About 5 s.
#
# Every fit runs on the CSV as read back, so Python reads exactly the numbers R used.
#
# 1. cox_robust.  coxph(..., cluster = ) at coxph.control(eps = 1e-12, iter.max = 100), Efron.
#    (a) veteran: Surv(time, status) ~ trt + celltype + karno + diagtime + age + prior
#        (p = 8; celltype levels squamous, smallcell, adeno, large as shipped), cluster =
#        row %% G for G = 5 (G <= p), 9 and 20 (G > p), row = 1..137.
#    (b) cohort_multicentre.csv, complete cases (n = 2,899), strata(centre), cluster = centre
#        (G = 8): the main-effects model (p = 7) and ctc_positive * subtype (p = 10).
#    For each: coef, naive and robust SE, the robust covariance, R's robust Wald test
#    (fit$wald.test, what summary() prints as "Wald test"), the robust score test (fit$rscore,
#    summary()$robscore: score residuals at beta = 0 summed within clusters), the df summary()
#    prints with them (always p), the rank coxph.wtest finds (its generalised Cholesky,
#    toler.chol = 1e-9) and the singular values of the robust covariance and of its
#    correlation matrix.
# 2. meta.  metafor's dat.normand1999 (length of stay, Normand 1999), escalc(measure = "MD"),
#    and a x3 copy (yi * 3, vi * 9: tau^2 scales by 9).  rma(method = ML, REML, PM,
#    control = list(threshold = 1e-14, tol = 1e-14, maxiter = 1000)).  metafor stops
#    Fisher scoring on an absolute change in tau^2 (|tau2_new - tau2_old| <= threshold), so
#    where one ulp of tau^2 exceeds 1e-14 (tau^2 ~ 685) it may never stop: REML on the
#    original scale does not converge at 1e-14 or 1e-13; it is recorded with threshold =
#    1e-12 (`threshold_used`).  Also every method with k = 1 (study 1 alone), and
#    REML + test = "knha" with k = 1 (metafor switches to "z" with a warning).
# 3. km.  (a) km_small.csv (14 made-up patients in two groups: censored before the first
#    event, tied events, one group ending in an event with S = 0): the full survfit table
#    for conf.type log-log, log and plain.  (b) aml (survival's, Maintained / Nonmaintained):
#    summary(survfit(..., conf.type = "log-log"), times = ..., extend = TRUE) and
#    extend = FALSE, with times before the first event, at event times and beyond each
#    group's last time (Nonmaintained ends at 45, Maintained at 161); the same on km_small.
# 4. trajectories.  flexmix on serial_ctc.csv: ctc_count ~ months + I(months^2) | patient_id,
#    FLXMRglm(family = "poisson", offset = log(blood_volume_ml / 7.5)), k = 1..3, best of
#    20 starts (set.seed(s), s = 1..20; one run for k = 1), control = list(iter.max = 10000,
#    tolerance = 1e-12, minprior = 0): logLik, df, nobs, AIC(), BIC() (flexmix's BIC uses
#    nobs = the number of samples, 1,815) and the BIC with n = patients (400) by hand.

suppressPackageStartupMessages({
  library(survival)
  library(metafor)
  library(flexmix)
})
source("json_writer.R")
RNGkind("Mersenne-Twister", "Inversion", "Rejection")

num17 <- function(x) sprintf("%.17g", x)
mat_json <- function(m) list(names = colnames(m), matrix = unname(m))

# ------------------------------------------------------------------------------------------
# 1. Robust Cox tests
# ------------------------------------------------------------------------------------------
vet <- survival::veteran
vet <- data.frame(row = seq_len(nrow(vet)), trt = vet$trt, celltype = as.character(vet$celltype),
                  time = vet$time, status = vet$status, karno = vet$karno,
                  diagtime = vet$diagtime, age = vet$age, prior = vet$prior)
write_reference_csv(vet, "veteran.csv")
vet <- read.csv("veteran.csv", stringsAsFactors = FALSE)
vet$celltype <- factor(vet$celltype, levels = c("squamous", "smallcell", "adeno", "large"))

mc <- read.csv("cohort_multicentre.csv", stringsAsFactors = FALSE)
mc <- mc[!is.na(mc$age), ]
mc$subtype <- factor(mc$subtype,
                     levels = c("luminal_a", "luminal_b", "her2_positive", "triple_negative"))

cph_ctl <- suppressWarnings(coxph.control(eps = 1e-12, iter.max = 100L))

robust_json <- function(fit, n_clusters) {
  s <- summary(fit)
  V <- fit$var
  colnames(V) <- rownames(V) <- names(coef(fit))
  d <- sqrt(diag(V))
  R <- V / outer(d, d)
  wt <- survival:::coxph.wtest(V, coef(fit), cph_ctl$toler.chol)
  list(formula = paste(deparse(formula(fit), width.cutoff = 500L), collapse = " "),
       n = fit$n, events = fit$nevent, n_clusters = n_clusters, p = length(coef(fit)),
       coef = coef(fit), naive_se = setNames(sqrt(diag(fit$naive.var)), names(coef(fit))), robust_se = d,
       robust_vcov = mat_json(V),
       loglik = fit$loglik, score_test = fit$score,
       wald_test = fit$wald.test, wald_df_summary = unname(s$waldtest["df"]),
       wald_p_summary = unname(s$waldtest["pvalue"]),
       wald_rank_coxph_wtest = wt$df,
       robust_score_test = fit$rscore, robust_score_df_summary = unname(s$robscore["df"]),
       robust_score_p_summary = unname(s$robscore["pvalue"]),
       singular_values_vcov = svd(V)$d, singular_values_correlation = svd(R)$d,
       iter = fit$iter)
}

vet_form <- Surv(time, status) ~ trt + celltype + karno + diagtime + age + prior
cox_robust <- list()
for (G in c(5L, 9L, 20L)) {
  vet$cl <- vet$row %% G
  fit <- coxph(vet_form, data = vet, ties = "efron", control = cph_ctl, cluster = cl)
  cox_robust[[sprintf("veteran_cluster_row_mod_%d", G)]] <-
    c(list(cluster = sprintf("row %%%% %d", G)), robust_json(fit, length(unique(vet$cl))))
}
fit_main <- coxph(Surv(os_months, os_event) ~ ctc_positive + subtype + age + node_positive +
                    grade3 + strata(centre), data = mc, ties = "efron", control = cph_ctl,
                  cluster = centre)
cox_robust$cohort_strat_cluster_centre <-
  c(list(cluster = "centre"), robust_json(fit_main, length(unique(mc$centre))))
fit_int <- coxph(Surv(os_months, os_event) ~ ctc_positive * subtype + age + node_positive +
                   grade3 + strata(centre), data = mc, ties = "efron", control = cph_ctl,
                 cluster = centre)
cox_robust$cohort_strat_interaction_cluster_centre <-
  c(list(cluster = "centre"), robust_json(fit_int, length(unique(mc$centre))))

# ------------------------------------------------------------------------------------------
# 2. Meta-analysis
# ------------------------------------------------------------------------------------------
nd <- escalc(measure = "MD", m1i = m1i, sd1i = sd1i, n1i = n1i, m2i = m2i, sd2i = sd2i,
             n2i = n2i, data = metadat::dat.normand1999)
nd_out <- data.frame(study = nd$study, source = nd$source, n1i = nd$n1i, m1i = nd$m1i,
                     sd1i = nd$sd1i, n2i = nd$n2i, m2i = nd$m2i, sd2i = nd$sd2i,
                     yi = num17(as.numeric(nd$yi)), vi = num17(as.numeric(nd$vi)))
write_reference_csv(nd_out, "normand1999.csv")
nd <- read.csv("normand1999.csv", stringsAsFactors = FALSE)

meta_json <- function(res) {
  pr <- predict(res)
  list(estimate = as.numeric(res$b), se = res$se, zval = res$zval, pval = res$pval,
       ci_lower = res$ci.lb, ci_upper = res$ci.ub, test = res$test,
       tau2 = res$tau2, se_tau2 = res$se.tau2, i2 = res$I2, h2 = res$H2, q = res$QE,
       q_p = res$QEp, k = res$k,
       pi_lower = if (is.null(pr$pi.lb)) NA_real_ else pr$pi.lb,
       pi_upper = if (is.null(pr$pi.ub)) NA_real_ else pr$pi.ub)
}
tight <- function(threshold) list(threshold = threshold, tol = 1e-14, maxiter = 1000)

meta <- list()
for (scale in c(1, 3)) {
  y <- nd$yi * scale
  v <- nd$vi * scale^2
  for (m in c("ML", "REML", "PM")) {
    th <- 1e-14
    attempts <- list()
    repeat {
      res <- tryCatch(rma(y, v, method = m, control = tight(th)),
                      error = function(e) conditionMessage(e))
      if (!is.character(res)) break
      attempts[[length(attempts) + 1L]] <- list(threshold = th, error = res)
      th <- th * 10
    }
    meta[[sprintf("normand1999_x%d_%s", scale, m)]] <-
      c(list(scale = scale, method = m, threshold_used = th, failed_thresholds = attempts),
        meta_json(res))
  }
}
k1 <- list()
for (m in c("FE", "DL", "REML", "ML", "PM", "HE", "SJ")) {
  k1[[m]] <- meta_json(rma(nd$yi[1], nd$vi[1], method = m, control = tight(1e-14)))
}
k1_knha_warning <- NULL
res_knha <- withCallingHandlers(
  rma(nd$yi[1], nd$vi[1], method = "REML", test = "knha", control = tight(1e-14)),
  warning = function(w) {
    k1_knha_warning <<- conditionMessage(w)
    invokeRestart("muffleWarning")
  })
k1$REML_knha <- c(meta_json(res_knha), list(warning = k1_knha_warning))

# ------------------------------------------------------------------------------------------
# 3. Kaplan-Meier
# ------------------------------------------------------------------------------------------
small <- data.frame(
  group = c(rep("A", 8), rep("B", 6)),
  time = c(1, 2, 3, 4, 4, 5, 7, 8, 2, 3, 3, 6, 9, 10),
  status = c(0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1))
write_reference_csv(small, "km_small.csv")
small <- read.csv("km_small.csv", stringsAsFactors = FALSE)

aml_df <- data.frame(time = survival::aml$time, status = survival::aml$status,
                     x = as.character(survival::aml$x))
write_reference_csv(aml_df, "aml.csv")
aml_df <- read.csv("aml.csv", stringsAsFactors = FALSE)

curve_json <- function(fit) {
  strata <- rep(names(fit$strata), fit$strata)
  list(strata = strata, time = fit$time, n_risk = fit$n.risk, n_event = fit$n.event,
       n_censor = fit$n.censor, surv = fit$surv, std_err_cumhaz = fit$std.err,
       lower = fit$lower, upper = fit$upper)
}
at_json <- function(fit, times, extend) {
  s <- summary(fit, times = times, extend = extend)
  list(times_requested = times, extend = extend, strata = as.character(s$strata),
       time = s$time, n_risk = s$n.risk, n_event = s$n.event, n_censor = s$n.censor,
       surv = s$surv, std_err = s$std.err, lower = s$lower, upper = s$upper)
}
km <- list(curves = list(), at_times = list())
for (ct in c("log-log", "log", "plain")) {
  fit <- survfit(Surv(time, status) ~ group, data = small, conf.type = ct)
  km$curves[[paste0("km_small_", ct)]] <- curve_json(fit)
}
fit_small <- survfit(Surv(time, status) ~ group, data = small, conf.type = "log-log")
fit_aml <- survfit(Surv(time, status) ~ x, data = aml_df, conf.type = "log-log")
aml_times <- c(0, 4, 5, 10, 30, 45, 50, 100, 161, 170, 200)
small_times <- c(0.5, 2, 3, 4.5, 8, 9.5, 12)
km$at_times$aml_extend <- at_json(fit_aml, aml_times, TRUE)
km$at_times$aml_no_extend <- at_json(fit_aml, aml_times, FALSE)
km$at_times$km_small_extend <- at_json(fit_small, small_times, TRUE)
km$at_times$km_small_no_extend <- at_json(fit_small, small_times, FALSE)

# ------------------------------------------------------------------------------------------
# 4. Trajectories: flexmix's BIC
# ------------------------------------------------------------------------------------------
serial <- read.csv("serial_ctc.csv", stringsAsFactors = FALSE)
off <- log(serial$blood_volume_ml / 7.5)
fm_ctl <- list(iter.max = 10000L, tolerance = 1e-12, minprior = 0)
flex <- list()
for (k in 1:3) {
  best <- NULL
  for (s in 1:20) {
    set.seed(s)
    f <- flexmix(ctc_count ~ months + I(months^2) | patient_id, data = serial, k = k,
                 model = FLXMRglm(family = "poisson", offset = off), control = fm_ctl)
    if (is.null(best) || as.numeric(logLik(f)) > as.numeric(logLik(best))) best <- f
    if (k == 1L) break
  }
  ll <- logLik(best)
  n_pat <- length(unique(serial$patient_id))
  flex[[as.character(k)]] <- list(
    loglik = as.numeric(ll), df = attr(ll, "df"), nobs = attr(ll, "nobs"),
    aic = AIC(best), bic = BIC(best), n_patients = n_pat, n_samples = nrow(serial),
    bic_patients = -2 * as.numeric(ll) + log(n_pat) * attr(ll, "df"),
    bic_samples = -2 * as.numeric(ll) + log(nrow(serial)) * attr(ll, "df"),
    converged = best@converged, sizes = as.integer(sort(table(clusters(best)))))
}

# ------------------------------------------------------------------------------------------
out <- json_header(
  pkgs = c("survival", "metafor", "metadat", "flexmix"),
  data_files = c("veteran.csv", "cohort_multicentre.csv", "normand1999.csv", "km_small.csv",
                 "aml.csv", "serial_ctc.csv"),
  control = list(coxph = list(eps = 1e-12, iter.max = 100, toler.chol = cph_ctl$toler.chol),
                 rma = list(threshold = 1e-14, tol = 1e-14, maxiter = 1000),
                 flexmix = fm_ctl))
out$cox_robust <- cox_robust
out$meta <- meta
out$meta_k1 <- k1
out$km <- km
out$flexmix_bic <- flex
out$notes <- c(
  "cox_robust: wald_test is fit$wald.test, which coxph computes from the robust covariance when there is a cluster; summary() prints it with df = p (wald_df_summary) whatever its rank. coxph.wtest solves with a generalised Cholesky (toler.chol 1e-9) that drops the pivots it finds singular: wald_rank_coxph_wtest is that rank. With G <= p the robust covariance has rank <= G - 1 (the clusters' dfbeta sum to about 0 at the MLE), so R's Wald statistic is a g-inverse quadratic form that depends on the column order, on p df: not meaningful.",
  "cox_robust: robust_score_test is fit$rscore (summary()$robscore): score residuals at beta = 0 summed within clusters, B = sum U_c U_c', test = u' B^- u. With G <= p the cluster scores span at most G dimensions and u is their sum, so the statistic equals G exactly whatever the data (veteran, G = 5: 5): not meaningful.",
  "meta: metafor's Fisher scoring stops on |tau2_new - tau2_old| <= threshold (absolute). failed_thresholds lists the thresholds at which rma() stopped with an error; threshold_used is the one recorded.",
  "meta_k1: with k = 1 metafor sets tau2 = 0 (every method), se_tau2 NA, I2 = 0, H2 = 1, QE = 0, QEp = 1; test = 'knha' becomes 'z' with a warning; the prediction interval equals the CI (none for FE).",
  "km: std_err_cumhaz is survfit's std.err (SE of the cumulative hazard); summary()'s std_err is the SE of S. With conf.type log-log, lower/upper are NA where S = 1 or S = 0 (survfit_confint). summary(times =, extend = TRUE) carries S forward past a group's last time with n.risk 0; extend = FALSE drops those times. n.event and n.censor count the interval since the previous requested time.",
  "flexmix_bic: BIC() of a flexmix fit uses nobs = the number of rows (samples), also with a grouping variable; bic_patients uses the number of patients.")

write_json_file(out, "expected_estimators.json")
cat("wrote expected_estimators.json\n")
