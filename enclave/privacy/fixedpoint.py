"""Fixed-point encoding of bounded measures: exact integer sums, noised by integer mechanisms.

Light on purpose (``decimal`` only; pyarrow is imported when a column type is inspected): the
worker checks, before it decrypts anything, that a plan's exact sums cannot overflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import TYPE_CHECKING

from sdk.errors import PrivacyError
from sdk.protocol.plan import quote

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from sdk.protocol.spec import OutputSpec

SIGNIFICANT_DIGITS = 6
MAX_FIXED_SUM = 2**62
"""Exact sums stay below this (HUGEINT in DuckDB, int64 for OpenDP's integer mechanisms)."""


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point encoding of a measure bounded to [lower, upper]: real = integer * quantum."""

    lower: int
    upper: int
    quantum: Decimal
    impute: int
    places: int

    @classmethod
    def from_bounds(cls, lower: Decimal, upper: Decimal) -> FixedPoint:
        """Pick a quantum 10^(e-6), e = floor(log10(max(|L|, |U|))), so a bound spans 10^6..10^7
        units; round the bounds to the grid (monotone, so lower <= upper still holds)."""
        if lower > upper:
            raise PrivacyError("measure lower bound above upper bound")
        biggest = max(abs(lower), abs(upper))
        exponent = 0 if biggest == 0 else biggest.adjusted() - SIGNIFICANT_DIGITS
        quantum = Decimal(1).scaleb(exponent)
        with localcontext() as ctx:
            ctx.prec = 80
            lo = int((lower / quantum).to_integral_value(ROUND_HALF_EVEN))
            hi = int((upper / quantum).to_integral_value(ROUND_HALF_EVEN))
        impute = min(max(0, lo), hi)
        return cls(lo, hi, quantum, impute, max(0, -exponent))

    @property
    def max_abs(self) -> int:
        """The largest absolute fixed-point value a single row can carry."""
        return max(abs(self.lower), abs(self.upper))

    def to_real(self, value: int | Decimal) -> Decimal:
        """The real value of a fixed-point integer (or ratio)."""
        with localcontext() as ctx:
            ctx.prec = 80
            return Decimal(value) * self.quantum

    def sql(self, column: str, source: pa.DataType) -> str:
        """DuckDB expression mapping ``column`` (of Arrow type ``source``) to its clamped
        fixed-point BIGINT. Float columns are tested for NaN; others cannot hold one."""
        import pyarrow as pa

        x = quote(column) if pa.types.is_float64(source) else f"CAST({quote(column)} AS DOUBLE)"
        return self.sql_of(x, is_float=bool(pa.types.is_floating(source)))

    def sql_of(self, x: str, *, is_float: bool = True) -> str:
        """DuckDB expression mapping the DOUBLE expression ``x`` to its clamped fixed-point
        BIGINT: NULL (and NaN when ``is_float``) becomes the bound nearest to zero; +/-inf and
        huge values land on a bound."""
        lo_real = float(self.to_real(self.lower))
        hi_real = float(self.to_real(self.upper))
        factor = float(1 / self.quantum) if self.quantum < 1 else None
        scaled = (
            f"greatest({lo_real!r}, least({hi_real!r}, {x})) * {factor!r}"
            if factor is not None
            else f"greatest({lo_real!r}, least({hi_real!r}, {x})) / {float(self.quantum)!r}"
        )
        missing = f"{x} IS NULL OR isnan({x})" if is_float else f"{x} IS NULL"
        return (
            f"CASE WHEN {missing} THEN CAST({self.impute} AS BIGINT) "
            f"ELSE greatest(CAST({self.lower} AS BIGINT), least(CAST({self.upper} AS BIGINT), "
            f"CAST(round({scaled}) AS BIGINT))) END"
        )


def measure_fixed_points(spec: OutputSpec) -> list[FixedPoint]:
    """The fixed-point encoding of each measure of ``spec``, in order."""
    return [FixedPoint.from_bounds(Decimal(m.lower), Decimal(m.upper)) for m in spec.measures]


__all__ = ["MAX_FIXED_SUM", "SIGNIFICANT_DIGITS", "FixedPoint", "measure_fixed_points"]
