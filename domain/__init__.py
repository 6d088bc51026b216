"""The billing domain: aggregates, commands, pricing; pure, no I/O."""

import decimal

# Exact arithmetic at every size the contracts allow. A quantity has up to 15 integer digits and
# 9 decimals (24 significant digits), and a total sums up to 10^18 of them: 42 digits. Python's
# default context keeps 28 and rounds silently past them. Each thread copies DefaultContext
# when it first uses decimal, so this holds for the threads started later as for this one.
EXACT_PRECISION = 60
decimal.DefaultContext.prec = EXACT_PRECISION
decimal.getcontext().prec = EXACT_PRECISION
