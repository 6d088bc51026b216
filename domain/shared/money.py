"""Exact money: a Decimal amount with its currency. Never float."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

MINOR_UNITS = {"EUR": 2, "USD": 2, "NOK": 2, "SEK": 2, "DKK": 2, "GBP": 2, "JPY": 0}


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal):
            raise TypeError("Money amounts are Decimal, never float")
        if len(self.currency) != 3 or not self.currency.isupper():
            raise ValueError(f"currency must be an ISO 4217 code: {self.currency!r}")

    @classmethod
    def of(cls, amount: str | int | Decimal, currency: str) -> Money:
        if isinstance(amount, float):
            raise TypeError("Money amounts are Decimal, never float")
        return cls(Decimal(amount), currency)

    def rounded(self) -> Money:
        """HALF_UP to the currency's minor unit (the rule applied to every invoice line)."""
        exponent = Decimal(1).scaleb(-MINOR_UNITS.get(self.currency, 2))
        return Money(self.amount.quantize(exponent, rounding=ROUND_HALF_UP), self.currency)

    @property
    def minor_units(self) -> int:
        return int(self.rounded().amount.scaleb(MINOR_UNITS.get(self.currency, 2)))

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def times(self, factor: Decimal | int) -> Money:
        return Money(self.amount * factor, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"currency mismatch: {self.currency} vs {other.currency}")

    def __str__(self) -> str:
        return f"{self.rounded().amount} {self.currency}"


def plain(amount: Decimal) -> str:
    """A decimal as people write it, never in scientific notation (`str` writes 3.8E+2 for
    an amount normalised to 380)."""
    return format(amount, "f")
