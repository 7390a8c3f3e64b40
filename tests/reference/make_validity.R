# make_validity.R -- internal-external cross-validation (IECV) of a stratified Cox model.
#
# Run from this folder:   Rscript make_validity.R
# Writes:  expected_validity.json (bit-identical on every rerun; no random numbers)
# Needs:   survival, metafor, json_writer.R and cohort_multicentre.csv (this folder).
#
# On cohort_multicentre.csv, complete cases (patients with missing age dropped, n = 2,899),
# the model  Surv(os_months, os_event) ~ age + node_positive + grade3 + ctc_positive.
# For every centre k in turn:
#   fit_k   = coxph(model + strata(centre), data = the other centres)      (Efron)
#   lp      = X_k %*% coef(fit_k)   (the held-out centre's linear predictor; a constant
#             shift does not change C or the slope)
#   C       = concordance(Surv(os_months, os_event) ~ lp, data = centre k, reverse = TRUE)
#             (Harrell's C, a higher lp = an earlier event), var = infinitesimal jackknife
#   slope   = coef of coxph(Surv(os_months, os_event) ~ lp, data = centre k)  (calibration
#             slope) with its SE
# The per-centre C's and slopes are pooled with rma(yi, sei, method = "REML", test = "knha").

suppressPackageStartupMessages({
  library(survival)
  library(metafor)
})
source("json_writer.R")

mc <- read.csv("cohort_multicentre.csv", stringsAsFactors = FALSE)
mc <- mc[!is.na(mc$age), ]
cph_ctl <- suppressWarnings(coxph.control(eps = 1e-12, iter.max = 100L))
rma_ctl <- list(threshold = 1e-14, tol = 1e-14, maxiter = 10000L)
terms <- c("age", "node_positive", "grade3", "ctc_positive")

centres <- sort(unique(mc$centre))
rows <- lapply(centres, function(k) {
  train <- mc[mc$centre != k, ]
  held <- mc[mc$centre == k, ]
  fit <- coxph(Surv(os_months, os_event) ~ age + node_positive + grade3 + ctc_positive +
                 strata(centre), data = train, ties = "efron", control = cph_ctl)
  held$lp <- as.vector(as.matrix(held[, terms]) %*% coef(fit))
  cc <- concordance(Surv(os_months, os_event) ~ lp, data = held, reverse = TRUE)
  cal <- coxph(Surv(os_months, os_event) ~ lp, data = held, ties = "efron", control = cph_ctl)
  list(centre = k, n = nrow(held), events = sum(held$os_event),
       train_coef = unname(coef(fit)),
       C = unname(cc$concordance), C_se = sqrt(cc$var),
       slope = unname(coef(cal)), slope_se = sqrt(vcov(cal)[1, 1]))
})
col <- function(name) sapply(rows, `[[`, name)
per_centre <- list(centre = centres, n = as.integer(col("n")), events = as.integer(col("events")),
                   C = col("C"), C_se = col("C_se"), slope = col("slope"),
                   slope_se = col("slope_se"))
train_coef <- do.call(rbind, lapply(rows, `[[`, "train_coef"))

meta_json <- function(res) {
  pr <- predict(res)
  list(estimate = as.numeric(res$beta), se = res$se, ci_lower = res$ci.lb,
       ci_upper = res$ci.ub, tau2 = res$tau2, I2 = res$I2, Q = res$QE,
       pi_lower = pr$pi.lb, pi_upper = pr$pi.ub, test = res$test)
}
pool <- function(y, se) rma(yi = y, sei = se, method = "REML", test = "knha", control = rma_ctl)

out <- json_header(
  pkgs = c("survival", "metafor"),
  data_files = "cohort_multicentre.csv",
  control = list(coxph = list(eps = 1e-12, iter.max = 100, ties = "efron"),
                 rma = list(threshold = 1e-14, tol = 1e-14, maxiter = 10000)))
out$model <- "Surv(os_months, os_event) ~ age + node_positive + grade3 + ctc_positive (+ strata(centre) in the training fits)"
out$iecv <- per_centre
out$train_coef <- list(names = terms, matrix = train_coef)
out$pooled <- list(C_REML_knha = meta_json(pool(per_centre$C, per_centre$C_se)),
                   slope_REML_knha = meta_json(pool(per_centre$slope, per_centre$slope_se)))
out$notes <- c(
  "Each centre in turn is left out; the model is fitted, stratified by centre, on the others and evaluated on it.",
  "C: Harrell's (timewt = 'n') of the held-out centre's linear predictor, reverse = TRUE (a higher risk score means an earlier event); its SE from the infinitesimal jackknife.",
  "slope: the calibration slope, coefficient of the linear predictor in a Cox model of the held-out centre alone.")
write_json_file(out, "expected_validity.json")
cat("wrote expected_validity.json\n")
