# make_fit_statistics.R -- the model-level statistics R prints for a Cox fit.
#
# Run from this folder:   Rscript make_fit_statistics.R
# Writes:  expected_fit_statistics.json (bit-identical on every rerun on this machine)
# Needs:   survival, json_writer.R, cohort_multicentre.csv (this folder).
#
# On cohort_multicentre.csv, complete cases (n = 2,899): the stratified model
#   coxph(Surv(os_months, os_event) ~ ctc_positive + age + node_positive + grade3 + strata(centre))
# Efron and Breslow, without and with cluster = centre, and the unstratified Efron model:
# log-likelihood at 0 and at the fit, likelihood-ratio, Wald and score tests with df and p
# (summary(fit)$logtest, fit$wald.test unrounded, $sctest, and $robscore with a cluster), AIC(fit),
# and the
# concordance coxph stores (fit$concordance: Harrell's C of the linear predictor within strata,
# its SE from the infinitesimal jackknife, summed by cluster when the fit has one).

suppressPackageStartupMessages({
  library(survival)
})
source("json_writer.R")

mc <- read.csv("cohort_multicentre.csv", stringsAsFactors = FALSE)
mc <- mc[!is.na(mc$age), ]
cph_ctl <- suppressWarnings(coxph.control(eps = 1e-12, iter.max = 100L))

stats_json <- function(fit) {
  s <- summary(fit)
  test <- function(x) list(chisq = unname(x["test"]), df = unname(x["df"]),
                           p = unname(x["pvalue"]))
  out <- list(formula = paste(deparse(formula(fit), width.cutoff = 500L), collapse = " "),
              ties = fit$method, n = fit$n, events = fit$nevent, coef = coef(fit),
              loglik_null = fit$loglik[1], loglik = fit$loglik[2],
              lr_test = test(s$logtest),
              wald_test = list(chisq = unname(fit$wald.test), df = unname(s$waldtest["df"]),
                               p = pchisq(unname(fit$wald.test), unname(s$waldtest["df"]),
                                          lower.tail = FALSE)),
              score_test = test(s$sctest), aic = AIC(fit),
              concordance = unname(fit$concordance["concordance"]),
              concordance_se = unname(fit$concordance["std"]),
              concordance_counts = fit$concordance[c("concordant", "discordant", "tied.x",
                                                     "tied.y", "tied.xy")])
  if (!is.null(s$robscore)) out$robust_score_test <- test(s$robscore)
  out
}

f <- Surv(os_months, os_event) ~ ctc_positive + age + node_positive + grade3 + strata(centre)
fits <- list(
  strat_efron = coxph(f, data = mc, ties = "efron", control = cph_ctl),
  strat_breslow = coxph(f, data = mc, ties = "breslow", control = cph_ctl),
  strat_efron_cluster_centre = coxph(f, data = mc, ties = "efron", cluster = centre,
                                     control = cph_ctl),
  unstratified_efron = coxph(Surv(os_months, os_event) ~ ctc_positive + age + node_positive +
                               grade3, data = mc, ties = "efron", control = cph_ctl))

out <- json_header(
  pkgs = "survival",
  data_files = "cohort_multicentre.csv",
  control = list(coxph = list(eps = 1e-12, iter.max = 100)))
out$fits <- lapply(fits, stats_json)
out$notes <- c(
  "wald_test is fit$wald.test (summary() prints it rounded to 2 decimals) with summary's df; score_test is summary(fit)$sctest; with a cluster the Wald test uses the robust covariance and robust_score_test is summary(fit)$robscore.",
  "aic = AIC(fit) = -2 loglik + 2 p.",
  "concordance is fit$concordance: Harrell's C (timewt 'n') of the linear predictor, pairs within strata only; concordance_se its infinitesimal-jackknife SE, with the influences summed by cluster for the cluster fit.")

write_json_file(out, "expected_fit_statistics.json")
cat("wrote expected_fit_statistics.json\n")
