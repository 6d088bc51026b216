"""A subscription's billing details, as invoices print them and VAT reads them."""

from __future__ import annotations

from typing import Any

from domain.shared.errors import CommandRefused

CUSTOMER_FIELDS = ("name", "address", "country", "vat_id", "business", "email")


def customer_details(fields: dict[str, Any] | None) -> dict[str, Any]:
    """Billing details: name, address, country (ISO 3166 alpha-2), VAT id, business (bool)."""
    fields = fields or {}
    unknown = sorted(set(fields) - set(CUSTOMER_FIELDS))
    if unknown:
        raise CommandRefused(f"unknown customer field(s): {', '.join(unknown)}",
                             "invalid_customer")
    customer = {k: fields[k] for k in CUSTOMER_FIELDS if fields.get(k) is not None}
    if "country" in customer:
        country = str(customer["country"]).upper()
        if len(country) != 2 or not country.isalpha():
            raise CommandRefused("country is an ISO 3166 two-letter code", "invalid_customer")
        customer["country"] = country
    if "business" in customer:
        customer["business"] = bool(customer["business"])
    return customer
