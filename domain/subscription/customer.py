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
    for key, value in customer.items():
        if key == "business":
            if not isinstance(value, bool):  # "false" would read as a business (no VAT)
                raise CommandRefused("business is true or false", "invalid_customer")
        elif not isinstance(value, str) or len(value) > 256:
            raise CommandRefused(f"customer {key} is a string of at most 256 characters",
                                 "invalid_customer")
    if "country" in customer:
        country = customer["country"].upper()
        if len(country) != 2 or not (country.isascii() and country.isalpha()):
            raise CommandRefused("country is an ISO 3166 two-letter code", "invalid_customer")
        customer["country"] = country
    return customer
