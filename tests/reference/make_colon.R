# make_colon.R -- a real cohort end to end: survival's `colon` trial as three centre uploads.
#
# Run from this folder:   Rscript make_colon.R
# Writes:  colon.csv            (survival's `colon` as shipped: 1,858 rows, two per patient)
#          expected_colon.json  (byte-identical on every rerun on this machine)
# Needs:   survival, metafor, json_writer.R (this folder; a copy of the shared writer).
#
# The data: Moertel et al., adjuvant levamisole and fluorouracil for stage B/C colon cancer
# (N Engl J Med 1990;322:352-8; survival's `colon`, see ?colon).  929 patients, each with a
# recurrence record (etype 1) and a death record (etype 2); `time` in days; sex 1 = male;
# differ 1 = well, 2 = moderate, 3 = poor; extent 1 = submucosa ... 4 = contiguous
# structures; nodes missing in 18 patients, differ in 23.  No simulation, no random numbers.
#
# What the pipeline test (tests/e2e/test_colon.py) reproduces, computed here from colon.csv:
#   per patient   rec = etype-1 status, rec_days = etype-1 time,
#                 death = etype-2 status, death_days = etype-2 time;
#                 relapse-free survival as the centre defined it (the schema's `dfs`,
#                 "recurrence or death"): days = rec_days if rec == 1 else death_days,
#                 event = rec == 1 | death == 1;  overall survival: death_days, death.
#   centres       by id: leiden (A) 1-310, muenster (B) 311-620, boston (C) 621-929.
#   units         leiden and boston deliver days: months = days / 30.4375;
#                 muenster delivers weeks written with 4 decimals (sprintf("%.4f", days / 7),
#                 decimal comma), so its months are as.numeric(sprintf("%.4f", days / 7)) *
#                 7 / 30.4375.
#   exposure      nodes5 = nodes >= 5 (more than 4 positive nodes); missing nodes excluded.
#   covariates    age, treatment_arm (rx, reference Obs), female = sex == 0, poor =
#                 differ == 3, deep = extent >= 3, obstructed = obstruct; complete cases.
#                 Named as the analysis config names them (tests/e2e/colon/colon.yaml), so
#                 the coefficient names are the pipeline's: rx -> treatment_arm, obstruct ->
#                 obstructed (the same numbers as the formula written with rx and obstruct).
#   fits          (a) dfs: coxph(Surv(dfs_months, dfs_event) ~ nodes5 + age + treatment_arm +
#                     female + poor + deep + obstructed + strata(centre)), Efron, and the
#                     univariable ~ nodes5 + strata(centre);
#                 (b) os: the same two models;
#                 (c) per centre (no strata) the adjusted model of each endpoint; the nodes5
#                     log HR and SE pooled with rma(method = "REML") and REML + Knapp-Hartung;
#                 (d) the exclusion counts per centre.
#
# Ties.  A Cox fit depends on the times only through their order within a stratum and their
# ties.  The pipeline converts with a factor (x * (7 / 30.4375), x * (1 / 30.4375)), R here
# divides (x * 7 / 30.4375, x / 30.4375); the two differ by at most an ulp.  The script checks
# (and stops otherwise) that within each centre both conversions give the tie structure and
# order of the integer days, so either gives the same partial likelihood.  Python's float()
# of the 4-decimal strings and R's as.numeric() of them were also compared for all 929 x 2
# muenster-style strings: identical doubles (Python and R format with the same C rule, and
# parse correctly rounded here); tests/e2e/test_colon.py repeats that check on the times
# recorded in expected_colon.json (`times`).
#
# The univariable model.  The pipeline fits it on every patient with the exposure (nodes
# known), not only on the complete cases of the adjusted model, so `dfs_univariable` /
# `os_univariable` are fitted on that set; `*_univariable_complete_case` on the adjusted
# model's patients is recorded beside them.

suppressPackageStartupMessages({
  library(survival)
  library(metafor)
})
source("json_writer.R")

# ---------------------------------------------------------------------------------------
# 1. colon.csv: the data as shipped (long format, NA written as an empty field, CRLF)
# ---------------------------------------------------------------------------------------
shipped <- survival::colon
stopifnot(nrow(shipped) == 1858L, all(shipped$time == round(shipped$time)))
write_reference_csv(shipped, "colon.csv")
long <- read.csv("colon.csv", stringsAsFactors = FALSE)
stopifnot(identical(dim(long), dim(shipped)),
          isTRUE(all.equal(long$time, shipped$time)),
          identical(long$rx, as.character(shipped$rx)),
          identical(is.na(long$nodes), is.na(shipped$nodes)),
          identical(is.na(long$differ), is.na(shipped$differ)))

# ---------------------------------------------------------------------------------------
# 2. One row per patient
# ---------------------------------------------------------------------------------------
rec <- long[long$etype == 1, ]
dth <- long[long$etype == 2, ]
rec <- rec[order(rec$id), ]
dth <- dth[order(dth$id), ]
stopifnot(identical(rec$id, dth$id), nrow(rec) == 929L)
for (v in c("rx", "sex", "age", "obstruct", "nodes", "differ", "extent")) {
  stopifnot(identical(rec[[v]], dth[[v]]))  # patient-level fields equal on both records
}
pat <- data.frame(
  id = as.integer(dth$id), rx = dth$rx, sex = dth$sex, age = dth$age,
  obstruct = dth$obstruct, nodes = dth$nodes, differ = dth$differ, extent = dth$extent,
  rec = rec$status, rec_days = rec$time, death = dth$status, death_days = dth$time,
  stringsAsFactors = FALSE)
pat$dfs_days <- ifelse(pat$rec == 1, pat$rec_days, pat$death_days)
pat$dfs_event <- as.integer(pat$rec == 1 | pat$death == 1)
pat$os_days <- pat$death_days
pat$os_event <- as.integer(pat$death)

centres <- data.frame(centre = c("leiden", "muenster", "boston"), letter = c("A", "B", "C"),
                      first_id = c(1L, 311L, 621L), last_id = c(310L, 620L, 929L),
                      unit = c("days", "weeks", "days"), stringsAsFactors = FALSE)
pat$centre <- centres$centre[findInterval(pat$id, centres$first_id)]

# ---------------------------------------------------------------------------------------
# 3. Times in months as each centre's upload gives them
# ---------------------------------------------------------------------------------------
weeks_text <- function(days) sprintf("%.4f", days / 7)
months_r <- function(days, centre) {
  ifelse(centre == "muenster", as.numeric(weeks_text(days)) * 7 / 30.4375, days / 30.4375)
}
months_factor <- function(days, centre) {  # the pipeline's conversion (multiply by a factor)
  ifelse(centre == "muenster", as.numeric(weeks_text(days)) * (7 / 30.4375),
         days * (1 / 30.4375))
}
pat$dfs_months <- months_r(pat$dfs_days, pat$centre)
pat$os_months <- months_r(pat$os_days, pat$centre)

same_ties <- function(a, b) identical(rank(a, ties.method = "min"), rank(b, ties.method = "min"))
tie_check <- list()
for (cn in centres$centre) {
  idx <- pat$centre == cn
  for (ep in c("dfs", "os")) {
    d <- pat[[paste0(ep, "_days")]][idx]
    m <- pat[[paste0(ep, "_months")]][idx]
    f <- months_factor(d, rep(cn, length(d)))
    stopifnot(same_ties(d, m), same_ties(d, f))
    tie_check[[paste(cn, ep, sep = "_")]] <- list(
      distinct_times = length(unique(m)),
      tied_event_times = sum(table(m[pat[[paste0(ep, "_event")]][idx] == 1]) > 1),
      max_abs_relative_difference_factor_vs_division = max(abs(f - m) / m),
      same_order_and_ties_as_days = TRUE)
  }
}

# ---------------------------------------------------------------------------------------
# 4. Exposure, covariates, exclusions
# ---------------------------------------------------------------------------------------
pat$nodes5 <- as.numeric(pat$nodes >= 5)
pat$treatment_arm <- factor(pat$rx, levels = c("Obs", "Lev", "Lev+5FU"))
pat$female <- as.numeric(pat$sex == 0)
pat$poor <- as.numeric(pat$differ == 3)
pat$deep <- as.numeric(pat$extent >= 3)
pat$obstructed <- as.numeric(pat$obstruct)
covariates <- c("age", "treatment_arm", "female", "poor", "deep", "obstructed")

with_nodes <- pat[!is.na(pat$nodes5), ]
first_missing <- apply(is.na(with_nodes[covariates]), 1, function(m) {
  if (any(m)) covariates[which(m)[1]] else NA_character_
})
ana <- with_nodes[is.na(first_missing), ]

count_by <- function(keep) {
  as.integer(vapply(centres$centre, function(cn) sum(keep & pat$centre == cn), 0))
}
in_centre <- function(d, cn) d$centre == cn
exclusions <- list(
  centre = centres$centre,
  letter = centres$letter,
  first_id = centres$first_id,
  last_id = centres$last_id,
  patients = count_by(rep(TRUE, nrow(pat))),
  missing_nodes = count_by(is.na(pat$nodes)),
  with_nodes = as.integer(vapply(centres$centre, function(cn) sum(in_centre(with_nodes, cn)), 0)),
  missing_covariate = setNames(lapply(covariates, function(v) as.integer(vapply(
    centres$centre, function(cn) sum(in_centre(with_nodes, cn) & first_missing %in% v), 0))),
    covariates),
  analysed = as.integer(vapply(centres$centre, function(cn) sum(in_centre(ana, cn)), 0)),
  events_with_nodes = list(
    dfs = as.integer(vapply(centres$centre, function(cn) sum(with_nodes$dfs_event[in_centre(with_nodes, cn)]), 0)),
    os = as.integer(vapply(centres$centre, function(cn) sum(with_nodes$os_event[in_centre(with_nodes, cn)]), 0))),
  events_analysed = list(
    dfs = as.integer(vapply(centres$centre, function(cn) sum(ana$dfs_event[in_centre(ana, cn)]), 0)),
    os = as.integer(vapply(centres$centre, function(cn) sum(ana$os_event[in_centre(ana, cn)]), 0))))
stopifnot(all(exclusions$patients == exclusions$missing_nodes + exclusions$with_nodes),
          all(exclusions$with_nodes ==
                Reduce(`+`, exclusions$missing_covariate) + exclusions$analysed))

# ---------------------------------------------------------------------------------------
# 5. Fits
# ---------------------------------------------------------------------------------------
cph_ctl <- suppressWarnings(coxph.control(eps = 1e-12, iter.max = 100L))
rma_ctl <- list(threshold = 1e-14, tol = 1e-14, maxiter = 10000L)
rhs_adjusted <- "nodes5 + age + treatment_arm + female + poor + deep + obstructed"

fit_cox <- function(endpoint, rhs, data, strata = TRUE) {
  f <- as.formula(paste0("Surv(", endpoint, "_months, ", endpoint, "_event) ~ ", rhs,
                         if (strata) " + strata(centre)" else ""))
  fit <- coxph(f, data = data, ties = "efron", control = cph_ctl)
  stopifnot(fit$iter < 100L, all(is.finite(coef(fit))))
  fit$call$formula <- f
  fit
}
fit_json <- function(fit) {
  V <- vcov(fit)
  list(formula = paste(deparse(formula(fit), width.cutoff = 500L), collapse = " "),
       n = fit$n, events = fit$nevent,
       coef = coef(fit), se = sqrt(diag(V)),
       vcov = list(names = rownames(V), matrix = unname(V)),
       loglik_null = fit$loglik[1], loglik = fit$loglik[2],
       score_test = unname(fit$score), wald_test = unname(fit$wald.test),
       iterations = fit$iter)
}

fits <- list()
per_centre <- list()
meta <- list()
for (ep in c("dfs", "os")) {
  fits[[paste0(ep, "_adjusted")]] <- fit_json(fit_cox(ep, rhs_adjusted, ana))
  fits[[paste0(ep, "_univariable")]] <- fit_json(fit_cox(ep, "nodes5", with_nodes))
  fits[[paste0(ep, "_univariable_complete_case")]] <- fit_json(fit_cox(ep, "nodes5", ana))
  one <- lapply(centres$centre, function(cn) {
    fit_json(fit_cox(ep, rhs_adjusted, ana[ana$centre == cn, ], strata = FALSE))
  })
  yi <- vapply(one, function(x) unname(x$coef["nodes5"]), 0)
  sei <- vapply(one, function(x) unname(x$se["nodes5"]), 0)
  per_centre[[ep]] <- list(
    centre = centres$centre,
    n = vapply(one, function(x) as.integer(x$n), 0L),
    events = vapply(one, function(x) as.integer(x$events), 0L),
    nodes5_log_hr = yi, nodes5_se = sei,
    fits = setNames(one, centres$centre))
  meta_json <- function(res) {
    pr <- predict(res)
    list(estimate = as.numeric(res$beta), se = res$se, ci_lower = res$ci.lb,
         ci_upper = res$ci.ub, zval_or_tval = res$zval, pval = res$pval,
         tau2 = res$tau2, se_tau2 = res$se.tau2, I2 = res$I2, H2 = res$H2,
         Q = res$QE, Q_df = res$k - 1L, Q_p = res$QEp, k = res$k,
         pi_lower = pr$pi.lb, pi_upper = pr$pi.ub,
         weights_percent = setNames(unname(weights(res)), centres$centre),
         test = res$test, ddf = if (res$test == "z") NA_real_ else res$ddf)
  }
  meta[[ep]] <- list(
    REML = meta_json(rma(yi = yi, sei = sei, method = "REML", control = rma_ctl)),
    REML_knha = meta_json(rma(yi = yi, sei = sei, method = "REML", test = "knha",
                              control = rma_ctl)))
}

# ---------------------------------------------------------------------------------------
# 6. expected_colon.json
# ---------------------------------------------------------------------------------------
out <- json_header(
  pkgs = c("survival", "metafor"),
  data_files = "colon.csv",
  control = list(coxph = list(eps = 1e-12, iter.max = 100, ties = "efron"),
                 rma = list(threshold = 1e-14, tol = 1e-14, maxiter = 10000)))
out$source <- paste(
  "survival::colon (survival 3.5-3): Moertel CG et al. N Engl J Med 1990;322:352-8 and",
  "Ann Intern Med 1995;122:321-6 (the data closest to the final report). Two records per",
  "patient: etype 1 recurrence, etype 2 death; time in days.")
out$definitions <- list(
  centres = "leiden (A) ids 1-310 (days, xlsx), muenster (B) 311-620 (weeks with 4 decimals and a decimal comma, csv), boston (C) 621-929 (days, sav)",
  dfs = "relapse-free survival as the centre defined it (the schema's dfs, recurrence or death): days = rec_days if rec == 1 else death_days; event = rec == 1 or death == 1",
  os = "days = death_days (etype-2 time), event = death (etype-2 status)",
  months = "leiden, boston: days / 30.4375; muenster: as.numeric(sprintf('%.4f', days / 7)) * 7 / 30.4375",
  exposure = "nodes5 = nodes >= 5 (more than 4 positive nodes); patients with missing nodes are excluded",
  covariates = "age; treatment_arm = rx (reference Obs); female = sex == 0 (sex 1 = male); poor = differ == 3; deep = extent >= 3; obstructed = obstruct; complete cases (NA in differ makes poor NA)",
  univariable = "fitted on every patient with nodes known (as the pipeline does); *_univariable_complete_case on the adjusted model's patients",
  missing_covariate = "patients with nodes known dropped from the adjusted model, counted by their first missing covariate in the order age, treatment_arm, female, poor, deep, obstructed")
out$exclusions <- exclusions
out$tie_check <- tie_check
out$fits <- fits
out$per_centre <- per_centre
out$meta <- meta
out$times <- list(
  patient_id = pat$id, centre = pat$centre,
  dfs_months = pat$dfs_months, dfs_event = pat$dfs_event,
  os_months = pat$os_months, os_event = pat$os_event,
  note = "every patient (before exclusions), months as R computes them (section 3 of make_colon.R)")
out$notes <- c(
  "Coefficient names are the analysis config's (treatment_armLev, treatment_armLev+5FU, obstructed); R's formula with rx and obstruct gives the same numbers under rxLev, rxLev+5FU, obstruct.",
  "Per-centre fits are unstratified Cox models of one centre's complete cases; nodes5_log_hr / nodes5_se feed rma(yi, sei = se).",
  "weights_percent are metafor's weights() in percent, by centre.",
  "tie_check: within each centre both the division (R) and the factor (pipeline) conversions to months keep the order and ties of the integer days; the largest relative difference between them is recorded.")

write_json_file(out, "expected_colon.json")
cat("wrote colon.csv and expected_colon.json\n")
