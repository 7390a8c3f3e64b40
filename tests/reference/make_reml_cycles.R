# make_reml_cycles.R -- metafor's REML on eight meta-analyses where Fisher scoring does not
# converge on its own.
#
# Run from this folder:   Rscript make_reml_cycles.R
# Reads:   reml_cycles.csv  (case, centre, yi, vi: the per-centre adjusted log HRs of the
#          marker and their variances, 11 centres, from replicates of the paddy simulation
#          study, `pooled study --scenario paddy --seed 2026`; case = <endpoint>_<replicate>)
# Writes:  expected_reml_cycles.json  (byte-identical on every rerun)
# Needs:   metafor 3.8-1, json_writer.R (this folder).  Under a second.
#
# For each case: rma(yi, vi, method = "REML") with
#   * control = list(threshold = 1e-14, maxiter = 1000) (metafor's Fisher scoring as is), and
#     the default threshold (1e-5): whether it converges (`converges_plain`,
#     `converges_default`);
#   * control = list(threshold = 1e-14, stepadj = 0.5, maxiter = 10000): the step-halved
#     Fisher scoring metafor's help(rma) suggests when it does not converge; this converges in
#     every case and gives the recorded estimate, se, CI, tau2, se.tau2 (`reml`).
# yi and vi are written back as read (17 significant digits), and the tests use those.

suppressPackageStartupMessages(library(metafor))
source("json_writer.R")

data <- read.csv("reml_cycles.csv", stringsAsFactors = FALSE)
fits <- function(s, control) {
  tryCatch(rma(s$yi, s$vi, method = "REML", control = control), error = function(e) NULL)
}
cases <- list()
for (key in unique(data$case)) {
  s <- data[data$case == key, ]
  plain <- fits(s, list(threshold = 1e-14, maxiter = 1000))
  default <- fits(s, list())
  fit <- fits(s, list(threshold = 1e-14, stepadj = 0.5, maxiter = 10000))
  stopifnot(!is.null(fit))
  cases[[key]] <- list(
    centre = I(s$centre), yi = I(s$yi), vi = I(s$vi),
    converges_plain = !is.null(plain), converges_default = !is.null(default),
    reml = list(estimate = fit$b[1], se = fit$se, ci_lower = fit$ci.lb, ci_upper = fit$ci.ub,
                tau2 = fit$tau2, se_tau2 = fit$se.tau2, k = fit$k))
}
out <- list(
  source = paste("metafor", as.character(packageVersion("metafor")), "on", R.version.string),
  control = list(threshold = 1e-14, stepadj = 0.5, maxiter = 10000),
  cases = cases,
  notes = c(
    "converges_plain: rma(method = 'REML', control = list(threshold = 1e-14, maxiter = 1000)) stops without an error; converges_default: the same at metafor's default control.",
    "Where it does not converge, Fisher scoring cycles around the root of the REML score with steps that do not shrink; stepadj = 0.5 halves every step and converges."))
write_json_file(out, "expected_reml_cycles.json")
cat("wrote expected_reml_cycles.json\n")
