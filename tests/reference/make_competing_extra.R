# make_competing_extra.R -- competing-risks references that expected_competing.json lacks:
#   (a) cmprsk::crr on untied times (the cohort of make_competing.R with each time moved
#       down by a uniform amount within its month, so no two times tie), beside
#       finegray() + weighted coxph (Breslow and Efron coincide without ties);
#   (b) Gray's test stratified by centre (cmprsk::cuminc(..., strata = centre)) on the tied
#       original data.
#
# Run from this folder:   Rscript make_competing_extra.R
# Needs:   survival, cmprsk, json_writer.R, cohort_competing.csv (written by make_competing.R,
#          copied here from the shared reference folder).
# Writes:  cohort_competing_untied.csv, expected_competing_extra.json (byte-identical on
#          every rerun on this machine).

suppressPackageStartupMessages({
  library(survival)
  library(cmprsk)
})
source("json_writer.R")

RNGkind("Mersenne-Twister", "Inversion", "Rejection")
set.seed(20240601)
d <- read.csv("cohort_competing.csv", stringsAsFactors = FALSE)
jit <- data.frame(centre = d$centre, patient_id = d$patient_id, ctc_positive = d$ctc_positive,
                  age = sprintf("%.1f", d$age),
                  time_months = sprintf("%.6f", d$time_months - runif(nrow(d), 0.001, 0.999)),
                  status = d$status)
write_reference_csv(jit, "cohort_competing_untied.csv")
u <- read.csv("cohort_competing_untied.csv", stringsAsFactors = FALSE)
stopifnot(!anyDuplicated(u$time_months))
u$fstatus <- factor(u$status, levels = 0:2, labels = c("censored", "bc_death", "other_death"))

cph_ctl <- suppressWarnings(coxph.control(eps = 1e-12, iter.max = 100L))
mat_json <- function(m) list(names = rownames(m), matrix = unname(m))

cov1 <- cbind(ctc_positive = u$ctc_positive, age = u$age)
crr_u <- crr(ftime = u$time_months, fstatus = u$status, cov1 = cov1,
             failcode = 1, cencode = 0, gtol = 1e-8, maxiter = 100)
V <- crr_u$var; nm <- names(crr_u$coef); dimnames(V) <- list(nm, nm)

fg <- finegray(Surv(time_months, fstatus) ~ ., data = u, etype = "bc_death")
fgfit <- function(ties) {
  fit <- coxph(Surv(fgstart, fgstop, fgstatus) ~ ctc_positive + age, data = fg,
               weights = fgwt, cluster = patient_id, ties = ties, control = cph_ctl)
  list(ties = fit$method, n = fit$n, events = fit$nevent, coef = coef(fit),
       se = sqrt(diag(vcov(fit))),
       se_naive = setNames(sqrt(diag(fit$naive.var)), names(coef(fit))),
       loglik = fit$loglik, iter = fit$iter)
}

# (b) stratified Gray's test on the tied data
ci_s <- cuminc(ftime = d$time_months, fstatus = d$status, group = d$ctc_positive,
               strata = d$centre, cencode = 0)
gs <- ci_s$Tests

out <- json_header(
  pkgs = c("survival", "cmprsk"),
  data_files = c("cohort_competing.csv", "cohort_competing_untied.csv"),
  control = list(coxph = list(eps = 1e-12, iter.max = 100),
                 crr = list(gtol = 1e-8, maxiter = 100)))
out$untied <- list(
  jitter = "time_months - runif(n, 0.001, 0.999), written with 6 decimals; seed 20240601",
  crr = list(call = "crr(ftime = time_months, fstatus = status, cov1 = cbind(ctc_positive, age), failcode = 1, cencode = 0, gtol = 1e-8, maxiter = 100)",
             coef = crr_u$coef, se = setNames(sqrt(diag(V)), nm), vcov = mat_json(V),
             loglik = crr_u$loglik, loglik_null = crr_u$loglik.null,
             converged = crr_u$converged, n = crr_u$n),
  finegray = list(n_rows = nrow(fg), breslow = fgfit("breslow"), efron = fgfit("efron")))
out$gray_stratified <- list(
  call = "cuminc(ftime = time_months, fstatus = status, group = ctc_positive, strata = centre, cencode = 0)",
  cause = rownames(gs), stat = unname(gs[, "stat"]), p = unname(gs[, "pv"]),
  df = unname(gs[, "df"]))
out$notes <- c(
  "crr's coefficients solve the same estimating equation as finegray + coxph(ties = 'breslow') when no times tie; crr's SEs add the variance of estimating the censoring distribution, so they differ slightly from the robust coxph SEs.",
  "Gray's test with strata sums the score and variance over the centres (cmprsk's crstm).")
write_json_file(out, "expected_competing_extra.json")
cat("wrote cohort_competing_untied.csv, expected_competing_extra.json\n")
