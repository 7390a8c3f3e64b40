# make_counting.R -- counting-process Cox fits: robust SEs, cox.zph and concordance.
#
# Run from this folder:   Rscript make_counting.R
# Writes:  expected_counting.json (bit-identical on every rerun on this machine)
# Needs:   survival, json_writer.R, cohort_multicentre.csv, cohort_serial_td.csv,
#          samples_serial_td.csv (this folder; the last two made by make_timedep.R).
#
# Complements expected_timesplit.json and expected_timedep.json (the shared make_timesplit.R
# and make_timedep.R) with what they do not record for (start, stop] data:
#   time-split model (survSplit at 24 and 60 months of cohort_multicentre.csv, complete cases)
#     - cluster-robust SEs with cluster = patient_id, the robust Wald and score tests;
#     - cox.zph(terms = FALSE), transforms km, rank, identity;
#     - the unsplit model ctc_positive + age + node_positive + grade3 + strata(centre) fitted
#       on the split rows (same fit as unsplit) and its cox.zph;
#     - concordance() (timewt "n": counting-process data allow no other).
#   time-dependent model (tmerge of cohort_serial_td.csv + samples_serial_td.csv)
#     - cluster-robust SEs (cluster = patient_id), Efron and Breslow;
#     - cox.zph(terms = FALSE) for the three transforms; concordance().
#   conventions: survSplit with a start column and a cut below it, survSplit from 0, and tmerge
#     tdc() with two samples at one time, one at the end of follow-up and one after it.

suppressPackageStartupMessages({
  library(survival)
})
source("json_writer.R")

cph_ctl <- suppressWarnings(coxph.control(eps = 1e-12, iter.max = 100L))
mat_json <- function(m) list(names = rownames(m), matrix = unname(m))
fit_json <- function(fit) {
  out <- list(formula = paste(deparse(formula(fit), width.cutoff = 500L), collapse = " "),
              ties = fit$method, n = fit$n, events = fit$nevent,
              coef = coef(fit), se = sqrt(diag(vcov(fit))), loglik = fit$loglik,
              score_test = unname(fit$score), wald_test = unname(fit$wald.test),
              iter = fit$iter)
  if (!is.null(fit$naive.var)) {
    out$naive_se <- sqrt(diag(fit$naive.var))
    out$robust_score_test <- unname(fit$rscore)
    out$robust_vcov <- mat_json(vcov(fit))
  }
  out
}
zph_json <- function(fit) {
  one <- function(tr) {
    tab <- cox.zph(fit, transform = tr, terms = FALSE)$table
    list(terms = rownames(tab), chisq = unname(tab[, "chisq"]), df = unname(tab[, "df"]),
         p = unname(tab[, "p"]))
  }
  list(km = one("km"), rank = one("rank"), identity = one("identity"))
}
conc_json <- function(fit) {
  cc <- concordance(fit, timewt = "n")
  cnt <- cc$count
  list(concordance = unname(cc$concordance), var = cc$var, cvar = cc$cvar, n = cc$n,
       count_total = if (is.matrix(cnt)) colSums(cnt) else cnt)
}

# ---- time split ---------------------------------------------------------------------------
mc <- read.csv("cohort_multicentre.csv", stringsAsFactors = FALSE)
mc <- mc[!is.na(mc$age), ]
sp <- survSplit(Surv(os_months, os_event) ~ ., data = mc, cut = c(24, 60), episode = "tgroup",
                start = "tstart")
split_robust <- coxph(Surv(tstart, os_months, os_event) ~ ctc_positive:strata(tgroup) + age +
                        node_positive + grade3 + strata(centre),
                      data = sp, ties = "efron", cluster = patient_id, control = cph_ctl)
split_efron <- coxph(Surv(tstart, os_months, os_event) ~ ctc_positive:strata(tgroup) + age +
                       node_positive + grade3 + strata(centre),
                     data = sp, ties = "efron", control = cph_ctl)
unsplit_on_split <- coxph(Surv(tstart, os_months, os_event) ~ ctc_positive + age +
                            node_positive + grade3 + strata(centre),
                          data = sp, ties = "efron", control = cph_ctl)

# ---- time-dependent (tmerge as in make_timedep.R) -------------------------------------------
pat <- read.csv("cohort_serial_td.csv", stringsAsFactors = FALSE)
smp <- read.csv("samples_serial_td.csv", stringsAsFactors = FALSE)
smp$ctc_pos <- as.integer(smp$ctc_count * 7.5 / smp$blood_volume_ml >= 5)
base <- tmerge(pat[, c("centre", "patient_id", "age")], pat, id = patient_id,
               event = event(os_months, os_event))
td <- tmerge(base, smp, id = patient_id, ctc_pos_td = tdc(months, ctc_pos))
td_robust <- list(
  efron = coxph(Surv(tstart, tstop, event) ~ ctc_pos_td + age + strata(centre), data = td,
                ties = "efron", cluster = patient_id, control = cph_ctl),
  breslow = coxph(Surv(tstart, tstop, event) ~ ctc_pos_td + age + strata(centre), data = td,
                  ties = "breslow", cluster = patient_id, control = cph_ctl))
td_efron <- coxph(Surv(tstart, tstop, event) ~ ctc_pos_td + age + strata(centre), data = td,
                  ties = "efron", control = cph_ctl)
td_breslow <- coxph(Surv(tstart, tstop, event) ~ ctc_pos_td + age + strata(centre), data = td,
                    ties = "breslow", control = cph_ctl)

# ---- small cases of survSplit and tmerge's conventions ---------------------------------------
edge <- data.frame(id = 1:4, t = c(24, 30, 70, 5), e = c(1, 1, 0, 1), s0 = c(0, 26, 0, 0))
edge_split <- survSplit(Surv(s0, t, e) ~ ., data = edge, cut = c(-5, 24, 60), episode = "tgroup")
edge_split_zero <- survSplit(Surv(t, e) ~ ., data = edge[, c("id", "t", "e")], cut = c(24, 60),
                             episode = "tgroup", start = "tstart")
edge_pat <- data.frame(id = 1:2, os = c(10, 8), ev = c(1, 0))
edge_smp <- data.frame(id = c(1, 1, 1, 2, 2, 2), tm = c(2, 2, 5, 1, 8, 9), v = c(1, 0, 1, 1, 0, 0))
edge_td <- tmerge(tmerge(edge_pat, edge_pat, id = id, event = event(os, ev)), edge_smp, id = id,
                  x = tdc(tm, v))

out <- json_header(
  pkgs = "survival",
  data_files = c("cohort_multicentre.csv", "cohort_serial_td.csv", "samples_serial_td.csv"),
  control = list(coxph = list(eps = 1e-12, iter.max = 100),
                 cox.zph = "terms = FALSE (each column tested alone)",
                 concordance = "timewt = 'n' (the only one for (start, stop] data)"))
out$time_split <- list(
  data = "survSplit(Surv(os_months, os_event) ~ ., data = mc, cut = c(24, 60), episode = 'tgroup', start = 'tstart'), complete cases",
  n_rows = nrow(sp),
  robust_cluster_patient = fit_json(split_robust),
  cox_zph = zph_json(split_efron),
  concordance = conc_json(split_efron),
  unsplit_model_on_split_rows = c(fit_json(unsplit_on_split),
                                  list(cox_zph = zph_json(unsplit_on_split),
                                       concordance = conc_json(unsplit_on_split))))
out$time_dependent <- list(
  data = "tmerge as in make_timedep.R",
  n_rows = nrow(td),
  robust_cluster_patient = list(efron = fit_json(td_robust$efron),
                                breslow = fit_json(td_robust$breslow)),
  cox_zph = list(efron = zph_json(td_efron), breslow = zph_json(td_breslow)),
  concordance = list(efron = conc_json(td_efron)))
out$conventions <- list(
  survsplit_with_start = list(
    call = "survSplit(Surv(s0, t, e) ~ ., data = edge, cut = c(-5, 24, 60), episode = 'tgroup')",
    input = edge, output = edge_split),
  survsplit_from_zero = list(
    call = "survSplit(Surv(t, e) ~ ., data = edge[, c('id', 't', 'e')], cut = c(24, 60), episode = 'tgroup', start = 'tstart')",
    output = edge_split_zero),
  tmerge_tdc = list(
    call = "tmerge(tmerge(edge_pat, edge_pat, id = id, event = event(os, ev)), edge_smp, id = id, x = tdc(tm, v))",
    patients = edge_pat, samples = edge_smp, output = edge_td[, c("id", "tstart", "tstop", "event", "x")]))
out$notes <- c(
  "cox.zph for (start, stop] data: g(t) from the stop times of all rows; rank = rank() of every row's stop time (so splitting changes it), km = 1 - the left-continuous Kaplan-Meier with (start, stop] risk sets (unchanged by splitting), identity unchanged.",
  "concordance of a (start, stop] fit compares each event with the rows at risk at its time (start < t <= stop); with strata(centre) only within a centre.",
  "robust_vcov is vcov(fit) (the sandwich); naive_se the model-based SEs; robust_score_test is fit$rscore.")

write_json_file(out, "expected_counting.json")
cat("wrote expected_counting.json\n")
