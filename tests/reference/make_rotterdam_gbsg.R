# make_rotterdam_gbsg.R -- two real breast-cancer cohorts end to end: survival's `rotterdam`
# (Rotterdam tumour bank) and `gbsg` (German Breast Cancer Study Group 2) as two centre uploads.
#
# Run from this folder:   Rscript make_rotterdam_gbsg.R
# Writes:  rotterdam.csv, gbsg.csv          (the data as shipped with survival 3.5-3)
#          expected_rotterdam_gbsg.json     (byte-identical on every rerun on this machine)
# Needs:   survival, metafor, json_writer.R (this folder; a copy of the shared writer).
#
# The data (Royston P, Altman DG. BMC Med Res Methodol 2013;13:33; see ?rotterdam, ?gbsg):
#   rotterdam  2,982 primary breast cancers: pid, year (of surgery), age, meno (0 pre, 1 post),
#              size (factor <=20, 20-50, >50), grade (2/3), nodes, pgr, er (fmol/l), hormon,
#              chemo (0/1), rtime (days to relapse or last follow-up), recur (0/1), dtime (days
#              to death or last follow-up), death (0/1).
#   gbsg       686 node-positive patients of the GBSG-2 trial: pid, age, meno, size (mm),
#              grade (1-3), nodes, pgr, er, hormon, rfstime (days to the first of recurrence,
#              death or last follow-up), status (1 recurrence or death).
# No simulation, no random numbers.
#
# What the pipeline test (tests/e2e/test_rotterdam_gbsg.py) reproduces, computed here from
# the two CSV files, never from the pipeline's output:
#   centres       rotterdam (every rotterdam patient), gbsg (every gbsg patient).
#   dfs           relapse-free survival (the schema's dfs, "recurrence or death").
#                 rotterdam: derived from the four columns exactly as ?rotterdam's example
#                 derives it:  rfstime <- ifelse(recur == 1, rtime, dtime),
#                              status  <- pmax(recur, death).
#                 The help page's Details: 43 patients died without recurrence but were
#                 censored for recurrence earlier (dtime > rtime); the example counts them as
#                 events at their death time (recurrence-free up to death is assumed), and so
#                 does this reference (listed in `inconsistent_rows`).
#                 gbsg: rfstime, status as delivered.
#   os            rotterdam: dtime, death.  gbsg: not collected (missing for every patient).
#   months        days / 30.4375 (the pipeline multiplies by 1 / 30.4375; `tie_check`
#                 confirms both keep the order and ties of the integer days in each centre).
#   exposure      pgr_positive = pgr >= 10 (progesterone receptor >= 10 fmol/l).
#   covariates    age; node_positive = nodes > 0; grade3 = grade == 3; endocrine_therapy =
#                 hormon. Nothing is missing in either data set, so every patient is analysed
#                 (complete cases = everyone).
#   fits          coxph(Surv(dfs_months, dfs_event) ~ pgr_positive + age + node_positive +
#                 grade3 + endocrine_therapy + strata(centre)), Efron, eps = 1e-12; the
#                 univariable ~ pgr_positive + strata(centre); the same for OS (only rotterdam
#                 patients have OS, so one stratum).
#   per centre    the adjusted model without strata in each centre. In gbsg every patient is
#                 node positive (a node-positive trial): node_positive is constant there, R
#                 gives it an NA coefficient and estimates the others as without it. The
#                 pgr_positive log HRs and SEs are pooled by rma(yi, sei, method = "REML"),
#                 with and without test = "knha" (DFS: k = 2; OS: k = 1, rotterdam alone).
#   Kaplan-Meier  survfit(Surv(months, event) ~ pgr_positive, conf.type = "log-log") on the
#                 pooled patients (both centres for DFS, rotterdam for OS); summary(times =
#                 c(12, 24, 60), extend = TRUE); median with CI; survdiff(... ~ pgr_positive +
#                 strata(centre)).

suppressPackageStartupMessages({
  library(survival)
  library(metafor)
})
source("json_writer.R")

# ---------------------------------------------------------------------------------------
# 1. The data as shipped (NA as an empty field, CRLF; rotterdam's size factor as its label)
# ---------------------------------------------------------------------------------------
rot_shipped <- survival::rotterdam
gbsg_shipped <- survival::gbsg
stopifnot(nrow(rot_shipped) == 2982L, nrow(gbsg_shipped) == 686L,
          !anyNA(rot_shipped), !anyNA(gbsg_shipped),
          all(rot_shipped$rtime == round(rot_shipped$rtime)),
          all(rot_shipped$dtime == round(rot_shipped$dtime)))
rot_out <- rot_shipped
rot_out$size <- as.character(rot_out$size)
write_reference_csv(rot_out, "rotterdam.csv")
write_reference_csv(gbsg_shipped, "gbsg.csv")
rot <- read.csv("rotterdam.csv", stringsAsFactors = FALSE, check.names = FALSE)
gb <- read.csv("gbsg.csv", stringsAsFactors = FALSE, check.names = FALSE)
stopifnot(identical(names(rot), names(rot_shipped)), identical(names(gb), names(gbsg_shipped)),
          identical(rot$size, as.character(rot_shipped$size)),
          isTRUE(all.equal(rot[names(rot) != "size"], rot_shipped[names(rot) != "size"],
                           check.attributes = FALSE)),
          isTRUE(all.equal(gb, gbsg_shipped, check.attributes = FALSE)))

# ---------------------------------------------------------------------------------------
# 2. One analysis row per patient (from the raw columns)
# ---------------------------------------------------------------------------------------
centres <- c("rotterdam", "gbsg")
p_rot <- data.frame(
  centre = "rotterdam", pid = rot$pid, age = rot$age, nodes = rot$nodes, grade = rot$grade,
  pgr = rot$pgr, hormon = rot$hormon,
  dfs_days = ifelse(rot$recur == 1, rot$rtime, rot$dtime),   # ?rotterdam's example
  dfs_event = pmax(rot$recur, rot$death),
  os_days = rot$dtime, os_event = rot$death, stringsAsFactors = FALSE)
p_gb <- data.frame(
  centre = "gbsg", pid = gb$pid, age = gb$age, nodes = gb$nodes, grade = gb$grade,
  pgr = gb$pgr, hormon = gb$hormon,
  dfs_days = gb$rfstime, dfs_event = gb$status,
  os_days = NA_real_, os_event = NA_integer_, stringsAsFactors = FALSE)
pat <- rbind(p_rot, p_gb)
pat$dfs_months <- pat$dfs_days / 30.4375
pat$os_months <- pat$os_days / 30.4375
pat$pgr_positive <- as.numeric(pat$pgr >= 10)
pat$node_positive <- as.numeric(pat$nodes > 0)
pat$grade3 <- as.numeric(pat$grade == 3)
pat$endocrine_therapy <- as.numeric(pat$hormon == 1)
covariates <- c("age", "node_positive", "grade3", "endocrine_therapy")

# The rows ?rotterdam's Details calls out: death without recurrence after the recurrence
# censoring time. (rtime > dtime never occurs; recurrence with rtime == dtime is listed too.)
inconsistent <- rot$recur == 0 & rot$death == 1 & rot$dtime > rot$rtime
stopifnot(sum(inconsistent) == 43L, !any(rot$rtime > rot$dtime))
same_day <- rot$recur == 1 & rot$rtime == rot$dtime

same_ties <- function(a, b) identical(rank(a, ties.method = "min"), rank(b, ties.method = "min"))
tie_check <- list()
for (cn in centres) {
  for (ep in c("dfs", "os")) {
    idx <- pat$centre == cn & !is.na(pat[[paste0(ep, "_days")]])
    if (!any(idx)) next
    d <- pat[[paste0(ep, "_days")]][idx]
    m <- pat[[paste0(ep, "_months")]][idx]
    f <- d * (1 / 30.4375)  # the pipeline's conversion (a factor)
    stopifnot(same_ties(d, m), same_ties(d, f))
    tie_check[[paste(cn, ep, sep = "_")]] <- list(
      distinct_times = length(unique(m)),
      tied_event_times = sum(table(m[pat[[paste0(ep, "_event")]][idx] == 1]) > 1),
      max_abs_relative_difference_factor_vs_division = max(abs(f - m) / m),
      same_order_and_ties_as_days = TRUE)
  }
}

# ---------------------------------------------------------------------------------------
# 3. Exclusions (none are expected: nothing is missing; OS is missing for every gbsg patient)
# ---------------------------------------------------------------------------------------
count_by <- function(keep) as.integer(vapply(centres, function(cn) sum(keep & pat$centre == cn), 0))
stopifnot(!anyNA(pat[c("pgr_positive", covariates, "dfs_months", "dfs_event")]))
exclusions <- list(
  centre = centres,
  patients = count_by(rep(TRUE, nrow(pat))),
  missing_pgr = count_by(is.na(pat$pgr_positive)),
  missing_dfs = count_by(is.na(pat$dfs_months) | is.na(pat$dfs_event)),
  missing_covariate = setNames(lapply(covariates, function(v) count_by(is.na(pat[[v]]))),
                               covariates),
  cohort = count_by(!is.na(pat$pgr_positive) & !is.na(pat$dfs_months)),
  missing_os = count_by(is.na(pat$os_months) | is.na(pat$os_event)),
  analysed_dfs = count_by(!is.na(pat$dfs_months)),
  analysed_os = count_by(!is.na(pat$os_months)),
  events = list(dfs = count_by(pat$dfs_event %in% 1), os = count_by(pat$os_event %in% 1)),
  pgr_positive = count_by(pat$pgr_positive == 1),
  node_positive = count_by(pat$node_positive == 1),
  grade3 = count_by(pat$grade3 == 1),
  endocrine_therapy = count_by(pat$endocrine_therapy == 1))

# ---------------------------------------------------------------------------------------
# 4. Cox fits, per-centre fits, pooling
# ---------------------------------------------------------------------------------------
cph_ctl <- suppressWarnings(coxph.control(eps = 1e-12, iter.max = 100L))
rma_ctl <- list(threshold = 1e-14, tol = 1e-14, maxiter = 10000L)
rhs_adjusted <- paste(c("pgr_positive", covariates), collapse = " + ")

fit_cox <- function(endpoint, rhs, data, strata = TRUE) {
  f <- as.formula(paste0("Surv(", endpoint, "_months, ", endpoint, "_event) ~ ", rhs,
                         if (strata) " + strata(centre)" else ""))
  fit <- withCallingHandlers(
    coxph(f, data = data, ties = "efron", control = cph_ctl),
    warning = function(w) {
      # the only warning expected: gbsg's constant node_positive
      if (!grepl("singular", conditionMessage(w))) stop(conditionMessage(w))
      invokeRestart("muffleWarning")
    })
  stopifnot(fit$iter < 100L, all(is.finite(coef(fit)[!is.na(coef(fit))])))
  fit$call$formula <- f
  fit
}
fit_json <- function(fit) {
  V <- vcov(fit)   # rows / columns of aliased (NA) coefficients are left out by vcov()
  list(formula = paste(deparse(formula(fit), width.cutoff = 500L), collapse = " "),
       n = fit$n, events = fit$nevent,
       coef = coef(fit), se = setNames(sqrt(diag(V))[names(coef(fit))], names(coef(fit))),
       aliased = names(coef(fit))[is.na(coef(fit))],
       vcov = list(names = rownames(V), matrix = unname(V)),
       loglik_null = fit$loglik[1], loglik = fit$loglik[2],
       score_test = unname(fit$score), wald_test = unname(fit$wald.test),
       iterations = fit$iter)
}
meta_json <- function(res, centre_names) {
  pr <- predict(res)
  list(estimate = as.numeric(res$beta), se = res$se, ci_lower = res$ci.lb,
       ci_upper = res$ci.ub, zval_or_tval = res$zval, pval = res$pval,
       tau2 = res$tau2, se_tau2 = res$se.tau2, I2 = res$I2, H2 = res$H2,
       Q = res$QE, Q_df = res$k - 1L, Q_p = res$QEp, k = res$k,
       pi_lower = pr$pi.lb, pi_upper = pr$pi.ub,
       weights_percent = setNames(unname(weights(res)), centre_names),
       test = res$test, ddf = if (res$test == "z") NA_real_ else res$ddf)
}

fits <- list()
per_centre <- list()
meta <- list()
km <- list()
logrank <- list()
for (ep in c("dfs", "os")) {
  d <- pat[!is.na(pat[[paste0(ep, "_months")]]), ]
  fits[[paste0(ep, "_adjusted")]] <- fit_json(fit_cox(ep, rhs_adjusted, d))
  fits[[paste0(ep, "_univariable")]] <- fit_json(fit_cox(ep, "pgr_positive", d))
  with_ep <- centres[centres %in% d$centre]
  one <- lapply(with_ep, function(cn) {
    fit_json(fit_cox(ep, rhs_adjusted, d[d$centre == cn, ], strata = FALSE))
  })
  yi <- vapply(one, function(x) unname(x$coef["pgr_positive"]), 0)
  sei <- vapply(one, function(x) unname(x$se["pgr_positive"]), 0)
  per_centre[[ep]] <- list(   # I(): arrays also for one centre (OS)
    centre = I(with_ep),
    not_estimable = I(setdiff(centres, with_ep)),
    n = I(vapply(one, function(x) as.integer(x$n), 0L)),
    events = I(vapply(one, function(x) as.integer(x$events), 0L)),
    pgr_positive_log_hr = I(yi), pgr_positive_se = I(sei),
    aliased = setNames(lapply(one, function(x) I(x$aliased)), with_ep),
    fits = setNames(one, with_ep))
  meta[[ep]] <- suppressWarnings(list(   # k = 1 (OS): metafor warns that knha becomes z
    REML = meta_json(rma(yi = yi, sei = sei, method = "REML", control = rma_ctl), with_ep),
    REML_knha = meta_json(rma(yi = yi, sei = sei, method = "REML", test = "knha",
                              control = rma_ctl), with_ep)))

  sf <- survfit(as.formula(paste0("Surv(", ep, "_months, ", ep, "_event) ~ pgr_positive")),
                data = d, conf.type = "log-log")
  tab <- summary(sf)$table
  s <- summary(sf, times = c(12, 24, 60), extend = TRUE)
  km[[ep]] <- list(
    group = sub("pgr_positive=", "", rownames(tab)),
    n = as.integer(tab[, "records"]), events = as.integer(tab[, "events"]),
    median = unname(tab[, "median"]), median_lower = unname(tab[, "0.95LCL"]),
    median_upper = unname(tab[, "0.95UCL"]),
    at_times = list(group = sub("pgr_positive=", "", as.character(s$strata)), time = s$time,
                    n_risk = s$n.risk, n_event = s$n.event, n_censor = s$n.censor,
                    survival = s$surv, std_err = s$std.err, lower = s$lower, upper = s$upper))
  sd <- survdiff(as.formula(paste0("Surv(", ep, "_months, ", ep, "_event) ~ pgr_positive + ",
                                   "strata(centre)")), data = d)
  logrank[[ep]] <- list(
    group = sub("pgr_positive=", "", names(sd$n)), n = as.integer(sd$n),
    observed = as.numeric(rowSums(as.matrix(sd$obs))),
    expected = as.numeric(rowSums(as.matrix(sd$exp))),
    chisq = sd$chisq, df = length(sd$n) - 1L,
    p_value = pchisq(sd$chisq, length(sd$n) - 1L, lower.tail = FALSE),
    strata = length(unique(d$centre)))
}

# ---------------------------------------------------------------------------------------
# 5. expected_rotterdam_gbsg.json
# ---------------------------------------------------------------------------------------
out <- json_header(
  pkgs = c("survival", "metafor"),
  data_files = c("rotterdam.csv", "gbsg.csv"),
  control = list(coxph = list(eps = 1e-12, iter.max = 100, ties = "efron"),
                 rma = list(threshold = 1e-14, tol = 1e-14, maxiter = 10000),
                 survfit = list(conf.type = "log-log", conf.int = 0.95),
                 km_times = c(12, 24, 60)))
out$source <- paste(
  "survival::rotterdam and survival::gbsg (survival 3.5-3), as used by Royston P, Altman DG,",
  "External validation of a Cox prognostic model: principles and methods. BMC Med Res",
  "Methodol 2013;13:33. rotterdam: Rotterdam tumour bank, 2,982 primary breast cancers;",
  "gbsg: GBSG-2 trial (Schumacher M et al. J Clin Oncol 1994;12:2086-93), 686 patients with",
  "complete prognostic variables.")
out$definitions <- list(
  centres = "rotterdam (every row of rotterdam.csv; xlsx, Dutch), gbsg (every row of gbsg.csv; Latin-1 csv, German)",
  dfs = "relapse-free survival (the schema's dfs). rotterdam: days = ifelse(recur == 1, rtime, dtime), event = pmax(recur, death), as ?rotterdam's example; gbsg: rfstime, status",
  os = "rotterdam: days = dtime, event = death; gbsg: not collected (missing)",
  months = "days / 30.4375",
  exposure = "pgr_positive = pgr >= 10 (fmol/l)",
  covariates = "age; node_positive = nodes > 0; grade3 = grade == 3; endocrine_therapy = hormon == 1; nothing missing",
  per_centre = "unstratified adjusted Cox in each centre with the endpoint; gbsg's node_positive is 1 for every patient (aliased, NA in R, left out)",
  inconsistent_rows = "rotterdam patients with recur == 0, death == 1 and dtime > rtime (?rotterdam Details: 43 patients); kept as RFS events at dtime, as the help page's example does")
out$exclusions <- exclusions
out$inconsistent_rows <- list(
  pid = rot$pid[inconsistent], rtime = rot$rtime[inconsistent],
  dtime = rot$dtime[inconsistent], row_in_rotterdam_csv = which(inconsistent),
  recurrence_same_day_as_death_or_last_contact = list(
    pid = rot$pid[same_day], death = rot$death[same_day]))
out$tie_check <- tie_check
out$fits <- fits
out$per_centre <- per_centre
out$meta <- meta
out$km <- km
out$logrank <- logrank
out$times <- list(
  centre = pat$centre, pid = pat$pid,
  dfs_months = pat$dfs_months, dfs_event = pat$dfs_event,
  os_months = pat$os_months, os_event = pat$os_event,
  note = "every patient (rotterdam rows then gbsg rows, in file order), months as R computes them")
out$notes <- c(
  "Coefficient names are the analysis config's (pgr_positive, age, node_positive, grade3, endocrine_therapy).",
  "per_centre$dfs$fits$gbsg has coef node_positive = null (aliased: constant in gbsg); its se is null and vcov leaves it out.",
  "OS: only rotterdam has it, so the stratified OS fit has one stratum and the OS pooling has k = 1 (metafor: tau2 = 0, knha turned into z).",
  "km: summary(survfit(...), times = c(12, 24, 60), extend = TRUE); n_event / n_censor count the interval since the previous time; lower / upper are the log-log limits.",
  "weights_percent are metafor's weights() in percent, by centre; pi_lower / pi_upper from predict().")

write_json_file(out, "expected_rotterdam_gbsg.json")
cat("wrote rotterdam.csv, gbsg.csv and expected_rotterdam_gbsg.json\n")
