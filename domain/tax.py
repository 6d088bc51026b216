"""VAT for digital services, by the customer's country and status (documented in
docs/invoices.md). Rates are the standard rates; each line's tax is rounded HALF_UP to the cent.

- customer in the seller's country: that country's rate (business or consumer);
- business customer with a VAT id in another country of the VAT area: 0 %, reverse charge;
- consumer in another country of the VAT area: the customer country's rate (OSS / VOEC);
- anywhere else: 0 %, outside the scope of VAT;
- no country given: taxed as domestic.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

# Standard VAT rates (percent) of the countries the engine invoices with tax.
VAT_RATES: dict[str, Decimal] = {
    "NO": Decimal(25), "SE": Decimal(25), "DK": Decimal(25), "DE": Decimal(19),
    "FR": Decimal(20), "FI": Decimal("25.5"), "NL": Decimal(21), "ES": Decimal(21),
    "IT": Decimal(22), "IE": Decimal(23), "AT": Decimal(20), "BE": Decimal(21),
    "PL": Decimal(23), "PT": Decimal(23),
}


@dataclass(frozen=True)
class TaxTreatment:
    rate: Decimal  # percent
    code: str  # "standard", "reverse_charge", "outside_scope"
    note: str


def treatment(seller_country: str, customer_country: str | None, business: bool,
              vat_id: str | None) -> TaxTreatment:
    seller = seller_country.upper()
    # No country given: taxed as a domestic sale (the safe default until the customer says).
    country = (customer_country or seller).upper()
    if country == seller:
        return TaxTreatment(VAT_RATES.get(seller, Decimal(0)), "standard",
                            f"VAT {VAT_RATES.get(seller, Decimal(0))} % ({seller})")
    if country in VAT_RATES:
        if business and vat_id:
            return TaxTreatment(Decimal(0), "reverse_charge",
                                f"Reverse charge: VAT to be accounted for by the customer "
                                f"({vat_id})")
        return TaxTreatment(VAT_RATES[country], "standard",
                            f"VAT {VAT_RATES[country]} % ({country})")
    return TaxTreatment(Decimal(0), "outside_scope", "Outside the scope of VAT")
