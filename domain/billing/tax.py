"""VAT for digital services, by the customer's country and status (documented in
docs/read-models.md). Rates are the standard rates in force on the invoice's issue date; each
line's tax is rounded HALF_UP to the cent.

- customer in the seller's country: that country's rate (business or consumer);
- business customer with a valid VAT id in another country of the VAT area: 0 %, reverse
  charge;
- consumer in another country of the VAT area, or a business whose VAT id is not valid
  (syntax and check digits, python-stdnum): the customer country's rate (OSS / VOEC), with a
  warning on the invoice for the invalid id;
- anywhere else: 0 %, outside the scope of VAT;
- no country given: taxed as domestic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from stdnum.eu import vat as eu_vat
from stdnum.util import get_cc_module

_D = Decimal
# Standard VAT rates (percent) of the 27 EU member states and Norway, each with the date it
# took effect: the last one on or before the issue date applies.
VAT_RATE_HISTORY: dict[str, list[tuple[date, Decimal]]] = {
    "AT": [(date(2016, 1, 1), _D(20))], "BE": [(date(1996, 1, 1), _D(21))],
    "BG": [(date(2007, 1, 1), _D(20))], "HR": [(date(2013, 1, 1), _D(25))],
    "CY": [(date(2014, 1, 13), _D(19))], "CZ": [(date(2013, 1, 1), _D(21))],
    "DK": [(date(1992, 1, 1), _D(25))],
    "EE": [(date(2009, 7, 1), _D(20)), (date(2024, 1, 1), _D(22)), (date(2025, 7, 1), _D(24))],
    "FI": [(date(2013, 1, 1), _D(24)), (date(2024, 9, 1), _D("25.5"))],
    "FR": [(date(2014, 1, 1), _D(20))], "DE": [(date(2021, 1, 1), _D(19))],
    "GR": [(date(2016, 6, 1), _D(24))], "HU": [(date(2012, 1, 1), _D(27))],
    "IE": [(date(2021, 3, 1), _D(23))], "IT": [(date(2013, 10, 1), _D(22))],
    "LV": [(date(2011, 7, 1), _D(21))], "LT": [(date(2009, 9, 1), _D(21))],
    "LU": [(date(2015, 1, 1), _D(17)), (date(2023, 1, 1), _D(16)), (date(2024, 1, 1), _D(17))],
    "MT": [(date(2004, 5, 1), _D(18))], "NL": [(date(2012, 10, 1), _D(21))],
    "PL": [(date(2011, 1, 1), _D(23))], "PT": [(date(2011, 7, 1), _D(23))],
    "RO": [(date(2017, 1, 1), _D(19)), (date(2025, 8, 1), _D(21))],
    "SK": [(date(2011, 1, 1), _D(20)), (date(2025, 1, 1), _D(23))],
    "SI": [(date(2013, 7, 1), _D(22))], "ES": [(date(2012, 9, 1), _D(21))],
    "SE": [(date(1990, 7, 1), _D(25))],
    "NO": [(date(2005, 1, 1), _D(25))],
}
EU = frozenset(VAT_RATE_HISTORY) - {"NO"}
# The rates in force today, for readers that have no date (the rate table of the docs).
VAT_RATES: dict[str, Decimal] = {c: history[-1][1] for c, history in VAT_RATE_HISTORY.items()}


def vat_rate(country: str, on: date) -> Decimal | None:
    """The standard rate in `country` on `on`; None outside the VAT area."""
    history = VAT_RATE_HISTORY.get(country)
    if history is None:
        return None
    rate = history[0][1]
    for since, value in history:
        if since <= on:
            rate = value
    return rate


def valid_vat_id(country: str, vat_id: str) -> bool:
    """Syntax and check digits of a VAT id, for the customer's country (an EU id starts with
    its country code, `EL` for Greece)."""
    if country in EU:
        prefix = "EL" if country == "GR" else country
        compact = "".join(vat_id.split()).upper()
        return compact.startswith(prefix) and bool(eu_vat.is_valid(compact))
    module = get_cc_module(country.lower(), "vat")
    return module is None or bool(module.is_valid(vat_id))


@dataclass(frozen=True)
class TaxTreatment:
    rate: Decimal  # percent
    code: str  # "standard", "reverse_charge", "outside_scope"
    note: str
    warning: str | None = None


def treatment(seller_country: str, customer_country: str | None, business: bool,
              vat_id: str | None, on: date) -> TaxTreatment:
    """The treatment of an invoice issued on `on` (the rates in force that day)."""
    seller = seller_country.upper()
    # No country given: taxed as a domestic sale (the safe default until the customer says).
    country = (customer_country or seller).upper()
    if country == seller:
        domestic = vat_rate(seller, on) or Decimal(0)
        return TaxTreatment(domestic, "standard", f"VAT {domestic} % ({seller})")
    rate = vat_rate(country, on)
    if rate is None:
        return TaxTreatment(Decimal(0), "outside_scope", "Outside the scope of VAT")
    warning = None
    if business and vat_id:
        if valid_vat_id(country, vat_id):
            return TaxTreatment(Decimal(0), "reverse_charge",
                                f"Reverse charge: VAT to be accounted for by the customer "
                                f"({vat_id})")
        warning = (f"VAT id {vat_id!r} is not a valid {country} VAT number: VAT charged, no "
                   "reverse charge")
    return TaxTreatment(rate, "standard", f"VAT {rate} % ({country})", warning)
