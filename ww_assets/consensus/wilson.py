"""The Wilson score interval of a volunteer fraction, written as SQL.

``fraction`` = selected / shown is a binomial proportion over few trials (an image is shown to a few tens of
volunteers), where the normal-approximation (Wald) interval has zero width when nobody or everybody clicked; the
Wilson score interval does not, and stays inside [0, 1]. It is computed in SQL, in the statement that writes the
counts, so that millions of rows never leave DuckDB for a Python pass.

The Python reference is astropy's ``binom_conf_interval(selected, shown, confidence_level=0.95,
interval="wilson")``; the tests check the SQL against it. (astropy's default ``confidence_level`` is 1 sigma, not
95%: pass it.) ``Z_95`` is the quantile both use.
"""

from __future__ import annotations

__all__ = ["Z_95", "wilson_sql"]

#: Two-sided 95% standard normal quantile, ``scipy.stats.norm.ppf(0.975)``: astropy's kappa for
#: ``confidence_level=0.95`` (``sqrt(2) * erfinv(0.95)``; the two agree to one unit in the last place).
Z_95 = 1.959963984540054


def wilson_sql(k: str, n: str) -> tuple[str, str, str]:
    """SQL for (fraction, ci_low, ci_high) of ``k`` successes in ``n`` trials.

    ``k`` and ``n`` are SQL expressions; the bounds are clipped to [0, 1] against rounding, as astropy clips them.
    When n = 0 the fraction is NULL and the bounds are 0 and 1 (DuckDB's greatest/least skip NULLs); no stored row
    has n = 0 (an image has a volunteer_consensus row once it is shown).
    """
    z = repr(Z_95)
    p = f"({k}::DOUBLE / nullif({n}, 0))"
    z2n = f"({z} * {z} / nullif({n}, 0))"
    centre = f"(({p} + {z2n} / 2) / (1 + {z2n}))"
    half = f"({z} * sqrt(greatest({p} * (1 - {p}) / {n} + {z2n} / (4 * {n}), 0)) / (1 + {z2n}))"
    return p, f"greatest(0.0, {centre} - {half})", f"least(1.0, {centre} + {half})"
